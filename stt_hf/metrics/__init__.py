"""Classification and image-caption metrics shipped as offline `evaluate` modules, plus helpers.

Each metric lives in its own folder, `<name>/<name>.py`, which is what `evaluate.load(<local path>)`
expects, so no Hub access is needed::

    from stt_hf.metrics import load_metric
    load_metric("macro_f1").compute(predictions=[0, 1], references=[0, 0])

`compute_classification_metrics` calls the same numpy functions directly (no `evaluate` round trip),
for use as `Trainer(compute_metrics=compute_classification_metrics)`.

The caption metrics (`CAPTION_METRICS`: bleu, meteor, rouge_l, cider) score as the COCO caption
evaluation does, with pycocoevalcap and Java (see `captioning`, where their scoring lives and which their
scripts import); `compute_caption_metrics` runs all four. The scene metrics (`SCENE_METRICS`: object_f1,
relation_accuracy) score captions of `fashion_scenes` against the scenes' `objects` (see
`stt_hf.data.scenes`, grammar in `stt_hf.data.scene_captions`); `compute_caption_metrics` adds them when
given the objects.

The segmentation metrics (`SEGMENTATION_METRICS`: mean_iou, pixel_accuracy) score per-pixel label maps;
`compute_segmentation_metrics` runs both on whole arrays for the Trainer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .accuracy.accuracy import accuracy_score
from .captioning import bleu_scores, cider_score, meteor_score, ptb_tokenize, rouge_l_score
from .macro_f1.macro_f1 import macro_f1_score
from .mean_iou.mean_iou import intersection_union, mean_iou_score
from .object_f1.object_f1 import object_f1_scores
from .pixel_accuracy.pixel_accuracy import pixel_accuracy_score
from .relation_accuracy.relation_accuracy import relation_accuracy_score
from .top5_accuracy.top5_accuracy import top_k_accuracy

METRICS_DIR = Path(__file__).resolve().parent
CAPTION_METRICS = ("bleu", "meteor", "rouge_l", "cider")
SCENE_METRICS = ("object_f1", "relation_accuracy")
SEGMENTATION_METRICS = ("mean_iou", "pixel_accuracy")
METRIC_NAMES = ("accuracy", "top5_accuracy", "macro_f1", *CAPTION_METRICS, *SCENE_METRICS,
                *SEGMENTATION_METRICS)

__all__ = [
    "CAPTION_METRICS",
    "METRICS_DIR",
    "METRIC_NAMES",
    "SCENE_METRICS",
    "SEGMENTATION_METRICS",
    "accuracy_score",
    "bleu_scores",
    "cider_score",
    "compute_caption_metrics",
    "distinct_ratio",
    "compute_classification_metrics",
    "compute_segmentation_metrics",
    "intersection_union",
    "load_metric",
    "macro_f1_score",
    "mean_iou_score",
    "meteor_score",
    "metric_path",
    "object_f1_scores",
    "pixel_accuracy_score",
    "ptb_tokenize",
    "relation_accuracy_score",
    "rouge_l_score",
    "top_k_accuracy",
]


def metric_path(name: str) -> str:
    """Local folder of the metric `name` (one of `METRIC_NAMES`), suitable for `evaluate.load`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(METRIC_NAMES)}")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs):
    """Load the shipped metric `name` (one of `METRIC_NAMES`) with `evaluate.load`.

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


def distinct_ratio(predictions, references) -> float:
    """Distinct generated captions over distinct first references: the collapse check.

    A captioner that says one thing for every image scores 1/number-of-distinct-references; one as
    varied as the data scores 1.0 (more is possible when references repeat and predictions do not).
    """
    if not predictions or len(predictions) != len(references):
        raise ValueError(f"need one prediction per image and at least one; got {len(predictions)} "
                         f"predictions for {len(references)} images")
    first = [r if isinstance(r, str) else r[0] for r in references]
    return len({p.strip() for p in predictions}) / len({r.strip() for r in first})


def compute_caption_metrics(predictions, references, objects=None) -> dict[str, float]:
    """COCO caption scores of `predictions` (one str per image) against `references` (a list of reference
    strings per image, or one string per image), through the shipped evaluate modules.

    Returns `bleu_1`..`bleu_4`, `meteor`, `rouge_l`, `cider` and `distinct_ratio` (see there). Captions
    are PTB-tokenized once (Java), then each module scores the tokens with `tokenize=False`. Raises
    ValueError for empty or mismatched inputs and RuntimeError without Java. With `objects` (one
    `fashion_scenes` objects dict per image), also `object_f1`, `object_precision`, `object_recall` and
    `relation_accuracy` of the untokenized predictions.
    """
    tokens, tokenized_references = ptb_tokenize(predictions, references)  # checks the inputs first
    scores = {"distinct_ratio": distinct_ratio(predictions, references)}
    for name in CAPTION_METRICS:
        metric = load_metric(name)
        scores.update(metric.compute(predictions=tokens, references=tokenized_references, tokenize=False))
    for name in SCENE_METRICS if objects is not None else ():
        scores.update(load_metric(name).compute(predictions=predictions, references=objects))
    return scores


def compute_segmentation_metrics(predictions, references, num_labels: int, ignore_index: int = 255,
                                 label_names: list[str] | None = None) -> dict[str, float]:
    """`mean_iou`, `pixel_accuracy` and `iou_<class>` of predicted label maps (N, H, W) against
    references of the same shape, with the functions of the shipped `mean_iou` and `pixel_accuracy`
    modules. A class absent from both has no `iou_<class>` entry."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    iou = mean_iou_score(predictions, references, num_labels, ignore_index)
    scores = {"mean_iou": iou["mean_iou"],
              "pixel_accuracy": pixel_accuracy_score(predictions, references, ignore_index)}
    names = label_names or [str(i) for i in range(num_labels)]
    scores.update({f"iou_{name}": value for name, value in zip(names, iou["per_class_iou"], strict=True)
                   if value == value})
    return scores
