"""Object F1 of scene captions: the items a caption names against the items in its scene.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("object_f1")`.

Each caption is read with the `fashion_scenes` grammar (`stt_hf.data.scene_captions.parse_caption`): every
noun phrase names as many items of its class as its count word says ("two bags": 2 bags; "a bag": 1). Per
caption, the items named correctly are, summed over classes, min(named, present). Over all captions (micro
average): precision = correct / named, recall = correct / present, F1 = 2 correct / (named + present). A
caption naming nothing the grammar knows (unparsable) names 0 items: it lowers recall, never crashes.
"""

import evaluate

from stt_hf.data.scene_captions import parse_caption
from stt_hf.metrics.caption_metric import SceneMetric, scene_kwargs_description
from stt_hf.metrics.captioning import check_scene_inputs

_DESCRIPTION = "Micro-averaged F1 of the items (class and count) a caption names versus the items present."

_KWARGS_DESCRIPTION = scene_kwargs_description(
    "object_f1, object_precision, object_recall (float): in [0, 1]; 0.0 where nothing was named or correct.",
    '>>> metric.compute(predictions=["two bags and a coat."],\n'
    '    ...                references=[{"class_id": [8, 4], "box": [[0, 0, 10, 10], [20, 0, 30, 10]]}])',
    "{'object_f1': 0.8, 'object_precision': 0.6666666666666666, 'object_recall': 1.0}")


def object_f1_scores(predictions, objects) -> dict[str, float]:
    """Micro object F1, precision and recall of captions against their scenes' `objects`."""
    from collections import Counter

    predictions, objects = check_scene_inputs(predictions, objects)
    correct = named = present = 0
    for caption, scene in zip(predictions, objects, strict=True):
        said, there = parse_caption(caption).items, Counter(scene["class_id"])
        correct += sum(min(count, there[c]) for c, count in said.items())
        named += sum(said.values())
        present += sum(there.values())
    return {"object_f1": 2 * correct / (named + present) if correct else 0.0,
            "object_precision": correct / named if correct else 0.0,
            "object_recall": correct / present if correct else 0.0}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ObjectF1(SceneMetric):
    """Object F1 of scene captions."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION

    def score(self, predictions, references):
        return object_f1_scores(predictions, references)
