"""Accuracy: the fraction of predicted labels that equal the reference labels.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("accuracy")`.
"""

import evaluate
import numpy as np

from stt_hf.metrics.metric_script import MetricScript, class_id_features

_DESCRIPTION = "Accuracy = (number of predictions equal to the reference) / (number of examples)."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    accuracy (float): in [0, 1]; 0.0 for an empty input.
Examples:
    >>> metric.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1])
    {'accuracy': 0.75}
"""


def accuracy_score(predictions, references) -> float:
    """Fraction of `predictions` equal to `references` (two 1-D sequences of class ids)."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape")
    return float(np.mean(predictions == references)) if references.size else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(MetricScript):
    """Classification accuracy over class ids."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION
    FORMAT = "numpy"

    def example_features(self):
        return class_id_features()

    def score(self, predictions, references):
        return {"accuracy": accuracy_score(predictions, references)}
