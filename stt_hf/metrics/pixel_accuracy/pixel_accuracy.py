"""Pixel accuracy of semantic segmentation label maps.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("pixel_accuracy")`.

The share of scored pixels (those whose reference is not `ignore_index`) predicted with their reference
class, counted over all images together.
"""

import evaluate
import numpy as np

from stt_hf.metrics.metric_script import MetricScript, label_map_features

_DESCRIPTION = "Pixel accuracy: correct pixels / scored pixels, over all images."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of 2-D int arrays): predicted class per pixel, one map per image.
    references (list of 2-D int arrays): true class per pixel, same shapes as the predictions.
    ignore_index (int, optional): reference value that is not scored; default 255.
Returns:
    pixel_accuracy (float): in [0, 1]; NaN when no pixel is scored.
Examples:
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 1]]])
    {'pixel_accuracy': 0.75}
"""


def pixel_accuracy_score(predictions, references, ignore_index: int = 255) -> float:
    """Correct / scored pixels over all maps (NaN when none is scored)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted maps but {len(references)} references")
    correct = total = 0
    for index, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        pred, ref = np.asarray(pred), np.asarray(ref)
        if pred.shape != ref.shape:
            raise ValueError(f"map {index}: prediction {pred.shape} and reference {ref.shape} differ "
                             "in shape")
        valid = ref != ignore_index
        correct += int(np.sum((pred == ref) & valid))
        total += int(valid.sum())
    return correct / total if total else float("nan")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PixelAccuracy(MetricScript):
    """Share of correctly labelled pixels."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION

    def example_features(self):
        return label_map_features()

    def score(self, predictions, references, ignore_index: int = 255):
        return {"pixel_accuracy": pixel_accuracy_score(predictions, references, ignore_index)}
