"""CIDEr of image captions, as the COCO caption evaluation computes it.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("cider")`.

pycocoevalcap `Cider`, which is CIDEr-D: TF-IDF vectors of 1- to 4-grams, with document frequencies
taken from the references of all captions passed together; cosine similarity to each reference with
clipped counts and a Gaussian length penalty (sigma 6), averaged over references and n, times 10, then
the mean over captions. Because of the IDF, the score depends on the whole set scored at once: scores of
parts do not average to the score of the whole, and a single image always scores 0. Captions are
PTB-tokenized first (Java) unless `tokenize=False`. The scoring lives in `stt_hf.metrics.captioning`,
which this script imports.
"""

import evaluate

from stt_hf.metrics.captioning import caption_features, check_caption_inputs, cider_score

_DESCRIPTION = "COCO-style CIDEr (CIDEr-D) of captions against one or more references each."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one generated caption per image.
    references (list of list of str, or list of str): the reference captions of each image.
    tokenize (bool, optional): PTB-tokenize both sides first (default True; needs Java). False for
        captions already tokenized that way.
Returns:
    cider (float): in [0, 10].
Examples:
    >>> metric.compute(predictions=["A man riding a horse.", "A dog on the grass."],
    ...                references=[["A man riding a horse.", "A person on a horse."], ["A cat on a couch."]])
    {'cider': 2.9355...}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Cider(evaluate.Metric):
    """COCO-style CIDEr of captions."""

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
        return {"cider": cider_score(predictions, references, tokenize)}
