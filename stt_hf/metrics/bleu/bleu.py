"""BLEU-1..4 of image captions, as the COCO caption evaluation computes them.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("bleu")`.

Corpus-level BLEU (pycocoevalcap `Bleu(4)`): clipped n-gram matches and lengths are summed over all
captions, with the brevity penalty taken against the reference closest in length to each caption.
Captions are PTB-tokenized first (Java) unless `tokenize=False`. The scoring lives in
`stt_hf.metrics.captioning`, which this script imports.
"""

import evaluate

from stt_hf.metrics.caption_metric import CaptionMetric, caption_kwargs_description
from stt_hf.metrics.captioning import bleu_scores

_DESCRIPTION = "COCO-style corpus BLEU-1..4 of captions against one or more references each."
_KWARGS_DESCRIPTION = caption_kwargs_description(
    "bleu_1, bleu_2, bleu_3, bleu_4 (float): in [0, 1].",
    "{'bleu_1': 0.6999..., 'bleu_2': 0.5916..., 'bleu_3': 0.5593..., 'bleu_4': 0.5438...}")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(CaptionMetric):
    """COCO-style BLEU-1..4 of captions."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION

    def score(self, predictions, references, tokenize: bool = True):
        return bleu_scores(predictions, references, tokenize)
