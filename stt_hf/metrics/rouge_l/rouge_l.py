"""ROUGE-L of image captions, as the COCO caption evaluation computes it.

An `evaluate` metric script; load it offline with `evaluate.load(<this folder>)` or
`stt_hf.metrics.load_metric("rouge_l")`.

pycocoevalcap `Rouge`, the number captioning papers report: per caption, the longest common subsequence
with each reference gives a precision and a recall; the best precision and the best recall over the
references (possibly from different references) combine into an F-measure with beta = 1.2, and the
result is the mean over captions. This differs from the `rouge_score` package's RougeL (F1, its own
tokenizer, best F over references). Captions are PTB-tokenized first (Java) unless `tokenize=False`.
The scoring lives in `stt_hf.metrics.captioning`, which this script imports.
"""

import evaluate

from stt_hf.metrics.caption_metric import CaptionMetric, caption_kwargs_description
from stt_hf.metrics.captioning import rouge_l_score

_DESCRIPTION = "COCO-style ROUGE-L (LCS F-measure, beta 1.2) of captions, averaged over captions."
_KWARGS_DESCRIPTION = caption_kwargs_description("rouge_l (float): in [0, 1].", "{'rouge_l': 0.7}")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RougeL(CaptionMetric):
    """COCO-style ROUGE-L of captions."""

    DESCRIPTION = _DESCRIPTION
    KWARGS_DESCRIPTION = _KWARGS_DESCRIPTION

    def score(self, predictions, references, tokenize: bool = True):
        return {"rouge_l": rouge_l_score(predictions, references, tokenize)}
