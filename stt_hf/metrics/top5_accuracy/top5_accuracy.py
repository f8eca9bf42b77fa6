"""Top-k accuracy (k=5 by default) from per-class scores (logits or probabilities).

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("top5_accuracy")`.

Ties are broken deterministically in favour of the lower class id, the same rule as `numpy.argmax`,
so top-1 accuracy equals the accuracy of `argmax` predictions. An example counts as correct when the
true class ranks among the first `k` classes under that ordering. `k` larger than the number of
classes is clipped to the number of classes (every example is then correct).
"""

import datasets
import evaluate
import numpy as np

from stt_hf.metrics.metric_script import MetricScript

_DESCRIPTION = "Top-k accuracy: the true class is among the k highest-scoring classes (ties: lower id first)."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): scores of shape (num_examples, num_classes), e.g. logits.
    references (list of int): true class ids in [0, num_classes).
    k (int, optional): how many top classes count, default 5 (clipped to num_classes).
Returns:
    top5_accuracy (float): in [0, 1]; 0.0 for an empty input.
Examples:
    >>> metric.compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[1, 1], k=1)
    {'top5_accuracy': 0.5}
"""


def top_k_accuracy(scores, references, k: int = 5) -> float:
    """Fraction of rows of `scores` (N, C) whose true class is among the top `k` (ties: lower id first)."""
    scores, references = np.asarray(scores, dtype=np.float64), np.asarray(references, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != references.shape[0]:
        raise ValueError(
            f"scores must have shape (num_examples, num_classes) matching {references.shape[0]} references, "
            f"got {scores.shape}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if references.size == 0:
        return 0.0
    num_classes = scores.shape[1]
    bad = (references < 0) | (references >= num_classes)
    if bad.any():
        values = sorted(set(references[bad].tolist()))[:10]
        raise ValueError(f"references outside [0, {num_classes}): {values}")
    true_score = scores[np.arange(len(references)), references][:, None]
    lower_id = np.arange(num_classes)[None, :] < references[:, None]
    rank = (scores > true_score).sum(1) + ((scores == true_score) & lower_id).sum(1)
    return float(np.mean(rank < min(k, num_classes)))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Top5Accuracy(MetricScript):
    """Top-k accuracy over per-class scores; the result key is `top5_accuracy` whatever `k` is."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION

    def example_features(self):
        return datasets.Features(
            {
                "predictions": datasets.Sequence(datasets.Value("float64")),
                "references": datasets.Value("int64"),
            }
        )

    def score(self, predictions, references, k: int = 5):
        scores = np.asarray(predictions, dtype=np.float64).reshape(len(predictions), -1)
        return {"top5_accuracy": top_k_accuracy(scores, references, k)}
