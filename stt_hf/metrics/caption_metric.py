"""The bases of the caption metrics: `CaptionMetric` (`bleu`, `meteor`, `rouge_l`, `cider`: captions against
reference captions) and `SceneMetric` (`object_f1`, `relation_accuracy`: captions against a scene's
objects), with the input description the first four share."""

from __future__ import annotations

from .captioning import caption_features, check_caption_inputs, check_scene_inputs, scene_features
from .metric_script import MetricScript

EXAMPLE_PREDICTIONS = '["A man riding a horse.", "A dog on the grass."]'
EXAMPLE_REFERENCES = '[["A man riding a horse.", "A person on a horse."], ["A cat on a couch."]]'


def caption_kwargs_description(returns: str, example_result: str, *, java: bool = False) -> str:
    """evaluate's input description of a caption metric: the shared Args, then its Returns and Example.

    `java`: the metric always needs Java (METEOR), not only for tokenizing.
    """
    tokenize_note = "default True" if java else "default True; needs Java"
    return f"""
Args:
    predictions (list of str): one generated caption per image.
    references (list of list of str, or list of str): the reference captions of each image.
    tokenize (bool, optional): PTB-tokenize both sides first ({tokenize_note}). False for captions
        already tokenized that way.
Returns:
    {returns}
Examples:
    >>> metric.compute(predictions={EXAMPLE_PREDICTIONS},
    ...                references={EXAMPLE_REFERENCES})
    {example_result}
"""


def scene_kwargs_description(returns: str, example_call: str, example_result: str) -> str:
    """evaluate's input description of a scene metric: the shared Args, then its Returns and Example."""
    return f"""
Args:
    predictions (list of str): one generated caption per scene.
    references (list of dict): each scene's `objects`: `class_id` (list of int) and `box` (list of
        [x0, y0, x1, y1]), as in the `fashion_scenes` dataset.
Returns:
    {returns}
Examples:
    {example_call}
    {example_result}
"""


class CaptionMetric(MetricScript):
    """Captions against one or more reference captions each, scored as the COCO caption evaluation does."""

    def example_features(self):
        return caption_features()

    def check_inputs(self, predictions, references) -> tuple:
        check_caption_inputs(predictions, references)
        return predictions, references


class SceneMetric(MetricScript):
    """Captions of `fashion_scenes` against their scene's objects (class ids and boxes)."""

    def example_features(self):
        return scene_features()

    def check_inputs(self, predictions, references) -> tuple:
        # Reduced to the two keys the features declare.
        return check_scene_inputs(predictions, references)
