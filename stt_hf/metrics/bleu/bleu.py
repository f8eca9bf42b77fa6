"""BLEU-1..4 of image captions, as the COCO caption evaluation computes them.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("bleu")`.

Corpus-level BLEU (pycocoevalcap `Bleu(4)`): clipped n-gram matches and lengths are summed over all
captions, with the brevity penalty taken against the reference closest in length to each caption.
Captions are PTB-tokenized first (Java) unless `tokenize=False`. The scoring lives in
`stt_hf.metrics.captioning`, which this script imports.
"""

import evaluate

from stt_hf.metrics.captioning import bleu_scores, caption_features, check_caption_inputs

_DESCRIPTION = "COCO-style corpus BLEU-1..4 of captions against one or more references each."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one generated caption per image.
    references (list of list of str, or list of str): the reference captions of each image.
    tokenize (bool, optional): PTB-tokenize both sides first (default True; needs Java). False for
        captions already tokenized that way.
Returns:
    bleu_1, bleu_2, bleu_3, bleu_4 (float): in [0, 1].
Examples:
    >>> metric.compute(predictions=["A man riding a horse.", "A dog on the grass."],
    ...                references=[["A man riding a horse.", "A person on a horse."], ["A cat on a couch."]])
    {'bleu_1': 0.6999..., 'bleu_2': 0.5916..., 'bleu_3': 0.5593..., 'bleu_4': 0.5438...}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    """COCO-style BLEU-1..4 of captions."""

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
        return bleu_scores(predictions, references, tokenize)
