"""Classification metrics shipped as offline `evaluate` modules, plus a Trainer `compute_metrics`.

Each metric lives in its own folder, `<name>/<name>.py`, which is what `evaluate.load(<local path>)`
expects, so no Hub access is needed::

    from stt_hf.metrics import load_metric
    load_metric("macro_f1").compute(predictions=[0, 1], references=[0, 0])

`compute_classification_metrics` calls the same numpy functions directly (no `evaluate` round trip),
for use as `Trainer(compute_metrics=compute_classification_metrics)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .accuracy.accuracy import accuracy_score
from .macro_f1.macro_f1 import macro_f1_score
from .top5_accuracy.top5_accuracy import top_k_accuracy

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("accuracy", "top5_accuracy", "macro_f1")

__all__ = [
    "METRICS_DIR",
    "METRIC_NAMES",
    "accuracy_score",
    "compute_classification_metrics",
    "load_metric",
    "macro_f1_score",
    "metric_path",
    "top_k_accuracy",
]


def metric_path(name: str) -> str:
    """Local folder of the metric `name` (one of `METRIC_NAMES`), suitable for `evaluate.load`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(METRIC_NAMES)}")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs):
    """Load the shipped metric `name` ('accuracy', 'top5_accuracy' or 'macro_f1') with `evaluate.load`.

    Works offline: the path is local. Extra keyword arguments go to `evaluate.load`.
    """
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


def compute_classification_metrics(eval_pred) -> dict[str, float]:
    """`compute_metrics` for the Hugging Face Trainer on single-label classification.

    `eval_pred` is an `EvalPrediction` (or a `(logits, label_ids)` pair); logits of shape
    (N, num_classes), or a tuple whose first element is the logits. Returns:

    - `accuracy`: accuracy of `argmax` predictions (ties: lower class id);
    - `top5_accuracy`: top-k accuracy with k = min(5, num_classes), so with 5 classes or fewer it is 1.0;
    - `macro_f1`: macro F1 over the classes seen in the labels or the `argmax` predictions.
    """
    if hasattr(eval_pred, "predictions"):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
    else:
        logits, labels = eval_pred
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected logits of shape ({labels.shape[0]}, num_classes), got {logits.shape}")
    predictions = logits.argmax(axis=-1)
    return {
        "accuracy": accuracy_score(predictions, labels),
        "top5_accuracy": top_k_accuracy(logits, labels, k=min(5, logits.shape[1])),
        "macro_f1": macro_f1_score(predictions, labels),
    }
