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

from stt_hf.metrics.caption_metric import CaptionMetric, caption_kwargs_description
from stt_hf.metrics.captioning import meteor_score

_DESCRIPTION = "COCO-style METEOR (1.5) of captions against one or more references each."
_KWARGS_DESCRIPTION = caption_kwargs_description("meteor (float): in [0, 1].", "{'meteor': 0.3464...}",
                                                 java=True)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Meteor(CaptionMetric):
    """COCO-style METEOR of captions."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION

    def score(self, predictions, references, tokenize: bool = True):
        return {"meteor": meteor_score(predictions, references, tokenize)}
