"""Mean intersection over union of semantic segmentation label maps.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("mean_iou")`.

Areas are summed over the whole input before dividing (as in the usual segmentation benchmarks), not
averaged per image. Per class c: IoU = |pred = c and ref = c| / |pred = c or ref = c|, over the pixels
whose reference is not `ignore_index`. `mean_iou` is the mean of the IoUs of the classes that occur in
the predictions or the references (a class absent from both has no IoU and is left out); `per_class_iou`
lists all `num_labels` classes, NaN for the absent ones.
"""

import evaluate
import numpy as np

from stt_hf.metrics.metric_script import MetricScript, label_map_features

_DESCRIPTION = "Mean IoU: mean over classes of |pred ∩ ref| / |pred ∪ ref|, areas summed over all images."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of 2-D int arrays): predicted class per pixel, one map per image.
    references (list of 2-D int arrays): true class per pixel, same shapes as the predictions.
    num_labels (int): number of classes; values must lie in [0, num_labels) or equal ignore_index.
    ignore_index (int, optional): reference value that is not scored; default 255.
Returns:
    mean_iou (float): in [0, 1]; NaN when no class occurs.
    per_class_iou (list of float): IoU of each class id, NaN where a class occurs nowhere.
Examples:
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 1]]], num_labels=2)
    {'mean_iou': 0.5833333333333333, 'per_class_iou': [0.5, 0.6666666666666666]}
"""


def intersection_union(predictions, references, num_labels: int, ignore_index: int = 255):
    """(intersection, union) areas per class, arrays of shape (num_labels,), summed over all maps."""
    intersection = np.zeros(num_labels, dtype=np.int64)
    union = np.zeros(num_labels, dtype=np.int64)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted maps but {len(references)} references")
    for index, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        pred, ref = np.asarray(pred, dtype=np.int64), np.asarray(ref, dtype=np.int64)
        if pred.shape != ref.shape:
            raise ValueError(f"map {index}: prediction {pred.shape} and reference {ref.shape} differ "
                             "in shape")
        valid = ref != ignore_index
        pred, ref = pred[valid], ref[valid]
        for name, values in (("prediction", pred), ("reference", ref)):
            if values.size and (values.min() < 0 or values.max() >= num_labels):
                raise ValueError(f"map {index}: {name} values must lie in [0, {num_labels}) or be "
                                 f"{ignore_index} (ignored), got {sorted(set(values.tolist()))[:10]}")
        hits = np.bincount(ref[pred == ref], minlength=num_labels)
        pred_area = np.bincount(pred, minlength=num_labels)
        ref_area = np.bincount(ref, minlength=num_labels)
        intersection += hits
        union += pred_area + ref_area - hits
    return intersection, union


def mean_iou_score(predictions, references, num_labels: int, ignore_index: int = 255) -> dict:
    """{"mean_iou": float, "per_class_iou": list of float}; see the module docstring."""
    intersection, union = intersection_union(predictions, references, num_labels, ignore_index)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    present = ~np.isnan(iou)
    mean = float(iou[present].mean()) if present.any() else float("nan")
    return {"mean_iou": mean, "per_class_iou": [float(v) for v in iou]}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(MetricScript):
    """Mean IoU over class ids of per-pixel label maps."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION

    def example_features(self):
        return label_map_features()

    def score(self, predictions, references, num_labels: int, ignore_index: int = 255):
        return mean_iou_score(predictions, references, num_labels, ignore_index)
