"""METEOR of image captions, as the COCO caption evaluation computes it.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("meteor")`.

METEOR 1.5, the jar bundled with pycocoevalcap (`-l en -norm`): unigram alignment through exact words,
stems, synonyms and paraphrases, scored against each caption's references. The result is METEOR's own
aggregate over all captions, not the mean of per-caption scores. Needs Java, which also loads the
paraphrase tables (seconds per call). Captions are PTB-tokenized first unless `tokenize=False`. The
scoring lives in `stt_hf.metrics.captioning`, which this script imports.
"""

import evaluate

from stt_hf.metrics.captioning import caption_features, check_caption_inputs, meteor_score

_DESCRIPTION = "COCO-style METEOR (1.5) of captions against one or more references each."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one generated caption per image.
    references (list of list of str, or list of str): the reference captions of each image.
    tokenize (bool, optional): PTB-tokenize both sides first (default True). False for captions already
        tokenized that way.
Returns:
    meteor (float): in [0, 1].
Examples:
    >>> metric.compute(predictions=["A man riding a horse.", "A dog on the grass."],
    ...                references=[["A man riding a horse.", "A person on a horse."], ["A cat on a couch."]])
    {'meteor': 0.3464...}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Meteor(evaluate.Metric):
    """COCO-style METEOR of captions."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=caption_features(),
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute the metric; empty or mismatched inputs raise ValueError."""
        # evaluate picks the feature option from the first example, an IndexError on empty lists:
        # check first, for a ValueError naming the lengths.
        if predictions is not None and references is not None:
            check_caption_inputs(predictions, references)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(self, predictions, references, tokenize: bool = True):
        return {"meteor": meteor_score(predictions, references, tokenize)}
