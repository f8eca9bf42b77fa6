"""Macro-averaged F1: the unweighted mean of the per-class F1 scores.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("macro_f1")`.

Per class c, F1 = 2 TP / (2 TP + FP + FN), which is 0 when the class is never predicted correctly
(for instance a class present in the references but absent from the predictions). The classes averaged
over are, by default, those that occur in the references or in the predictions (as scikit-learn does);
pass `labels` to average over a fixed list instead (a listed class absent from both counts as F1 = 0).
"""

import evaluate
import numpy as np

from stt_hf.metrics.metric_script import MetricScript, class_id_features

_DESCRIPTION = "Macro F1: mean over classes of 2TP / (2TP + FP + FN)."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of int, optional): classes to average over; default: those seen in references or predictions.
Returns:
    macro_f1 (float): in [0, 1]; 0.0 for an empty input.
Examples:
    >>> metric.compute(predictions=[0, 0, 1], references=[0, 1, 1])
    {'macro_f1': 0.6666666666666666}
"""


def macro_f1_score(predictions, references, labels=None) -> float:
    """Unweighted mean of per-class F1 over `labels` (default: classes in references or predictions)."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape")
    classes = np.union1d(references, predictions) if labels is None else np.asarray(labels)
    if classes.size == 0:
        return 0.0
    f1 = []
    for c in classes:
        tp = np.sum((predictions == c) & (references == c))
        fp = np.sum((predictions == c) & (references != c))
        fn = np.sum((predictions != c) & (references == c))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MacroF1(MetricScript):
    """Macro-averaged F1 over class ids."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION
    FORMAT = "numpy"

    def example_features(self):
        return class_id_features()

    def score(self, predictions, references, labels=None):
        return {"macro_f1": macro_f1_score(predictions, references, labels)}
