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

from stt_hf.metrics.caption_metric import CaptionMetric, caption_kwargs_description
from stt_hf.metrics.captioning import cider_score

_DESCRIPTION = "COCO-style CIDEr (CIDEr-D) of captions against one or more references each."
_KWARGS_DESCRIPTION = caption_kwargs_description("cider (float): in [0, 10].", "{'cider': 2.9355...}")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Cider(CaptionMetric):
    """COCO-style CIDEr of captions."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION

    def score(self, predictions, references, tokenize: bool = True):
        return {"cider": cider_score(predictions, references, tokenize)}
