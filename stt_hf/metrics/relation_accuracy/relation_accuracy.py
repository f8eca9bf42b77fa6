"""Relation accuracy of scene captions: the share of stated relations that hold in the scene.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("relation_accuracy")`.

Each caption is read with the `fashion_scenes` grammar (`stt_hf.data.scene_captions.parse_caption`): a
relation word between two noun phrases ("a bag left of a coat") states the relation of the first item to the
second. A statement counts only when it is between items the caption names correctly: the scene has an item
of each class (two distinct items when both classes are the same). It holds when some such pair of distinct
items has exactly that relation (`stt_hf.data.scene_captions.relation`: the larger of the horizontal and
vertical centre offsets decides). Over all captions: holding statements / counted statements, 0.0 when no
caption states a countable relation (unparsable captions state none).
"""

import evaluate

from stt_hf.data.scene_captions import parse_caption, relation
from stt_hf.metrics.caption_metric import SceneMetric, scene_kwargs_description
from stt_hf.metrics.captioning import check_scene_inputs

_DESCRIPTION = "Share of the relations stated between correctly named items that hold in the scene."

_KWARGS_DESCRIPTION = scene_kwargs_description(
    "relation_accuracy (float): in [0, 1]; 0.0 when no countable relation is stated.",
    '>>> metric.compute(predictions=["a bag left of a coat.", "a bag above a coat."],\n'
    '    ...                references=[{"class_id": [8, 4], "box": [[0, 0, 10, 10], [20, 0, 30, 10]]}] * 2)',
    "{'relation_accuracy': 0.5}")


def _holds(statement, scene) -> bool | None:
    """Whether (class a, relation, class b) holds in the scene; None when an item is named wrongly."""
    first, name, second = statement
    items = list(zip(scene["class_id"], scene["box"], strict=True))
    pairs = [(a, b) for i, a in enumerate(items) for j, b in enumerate(items)
             if i != j and a[0] == first and b[0] == second]
    if not pairs:
        return None
    return any(relation(a[1], b[1]) == name for a, b in pairs)


def relation_accuracy_score(predictions, objects) -> float:
    """Holding relations / relations stated between correctly named items, over all captions."""
    predictions, objects = check_scene_inputs(predictions, objects)
    verdicts = [_holds(statement, scene) for caption, scene in zip(predictions, objects, strict=True)
                for statement in parse_caption(caption).relations]
    counted = [v for v in verdicts if v is not None]
    return sum(counted) / len(counted) if counted else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RelationAccuracy(SceneMetric):
    """Relation accuracy of scene captions."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION

    def score(self, predictions, references):
        return {"relation_accuracy": relation_accuracy_score(predictions, references)}
