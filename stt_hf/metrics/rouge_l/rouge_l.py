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

from stt_hf.metrics.captioning import caption_features, check_caption_inputs, rouge_l_score

_DESCRIPTION = "COCO-style ROUGE-L (LCS F-measure, beta 1.2) of captions, averaged over captions."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one generated caption per image.
    references (list of list of str, or list of str): the reference captions of each image.
    tokenize (bool, optional): PTB-tokenize both sides first (default True; needs Java). False for
        captions already tokenized that way.
Returns:
    rouge_l (float): in [0, 1].
Examples:
    >>> metric.compute(predictions=["A man riding a horse.", "A dog on the grass."],
    ...                references=[["A man riding a horse.", "A person on a horse."], ["A cat on a couch."]])
    {'rouge_l': 0.7}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RougeL(evaluate.Metric):
    """COCO-style ROUGE-L of captions."""

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
        return {"rouge_l": rouge_l_score(predictions, references, tokenize)}
