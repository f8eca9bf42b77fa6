"""Shipped caption metrics (bleu, meteor, rouge_l, cider) against pycocoevalcap's scorers run directly.

Java starts are slow (METEOR loads its paraphrase tables, seconds each), so the Java-backed scores are
computed once per module in fixtures; the other checks use pre-tokenized captions (`tokenize=False`).
"""

import shutil

import pytest

pytest.importorskip("pycocoevalcap")

from stt_hf.metrics import (  # noqa: E402  (after the importorskip)
    CAPTION_METRICS,
    METRIC_NAMES,
    bleu_scores,
    cider_score,
    compute_caption_metrics,
    distinct_ratio,
    load_metric,
    meteor_score,
    metric_path,
    ptb_tokenize,
    rouge_l_score,
)

requires_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java")

PREDICTIONS = [
    "A man riding a horse on a beach.",  # one of its references, word for word
    "Two dogs play with a red ball in the park",
    "A plate of food on a wooden table.",
    "Purple elephants compute integrals",  # no word in common with its references
    "",  # empty
    "...",  # punctuation only: empty once tokenized
]
REFERENCES = [
    ["A man riding a horse on a beach.", "A person rides a horse along the shore."],
    ["Two dogs playing with a ball on the grass.", "A pair of dogs chase a red ball.", "Dogs in a park."],
    ["A plate of pasta sits on a table.", "Food served on a white plate."],
    ["A cat sleeping on a couch.", "A kitten naps on the sofa!"],
    ["A bus parked by the side of the road."],
    ["Children flying kites at the beach.", "Kids with kites."],
]
KEYS = {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
# Already tokenized (tokenize=False): no Java needed.
TOKENS_REFS = [["a man riding a horse", "a person on a horse"], ["a cat on a couch"], ["two dogs playing"]]


@pytest.fixture(scope="module")
def reference():
    """The COCO caption evaluation's scores, straight from pycocoevalcap (as its COCOEvalCap runs them)."""
    if shutil.which("java") is None:
        pytest.skip("needs Java")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(REFERENCES)})
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(PREDICTIONS)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu_{n}": b for n, b in enumerate(bleu, start=1)}
    scores["meteor"] = Meteor().compute_score(gts, res)[0]
    scores["rouge_l"] = Rouge().compute_score(gts, res)[0]
    scores["cider"] = Cider().compute_score(gts, res)[0]
    return scores


@pytest.fixture(scope="module")
def scores():
    """compute_caption_metrics on the fixed captions; one reference list given as a plain string."""
    if shutil.which("java") is None:
        pytest.skip("needs Java")
    return compute_caption_metrics(PREDICTIONS, [*REFERENCES[:4], REFERENCES[4][0], REFERENCES[5]])


@pytest.fixture(scope="module")
def module_scores():
    """Each module but meteor loaded with `evaluate.load(<folder>)` offline, tokenizing itself.

    METEOR's module already runs inside compute_caption_metrics; another JVM would cost seconds.
    """
    if shutil.which("java") is None:
        pytest.skip("needs Java")
    import evaluate
    import huggingface_hub.constants

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        # The libraries read these at import, so set both the variables and their parsed values.
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_EVALUATE_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
        for name in ("bleu", "rouge_l", "cider"):
            metric = evaluate.load(metric_path(name))
            out.update(metric.compute(predictions=PREDICTIONS, references=REFERENCES))
    return out


@requires_java
def test_compute_caption_metrics_matches_pycocoevalcap(scores, reference):
    assert set(scores) == KEYS | {"distinct_ratio"}
    assert all(isinstance(v, float) for v in scores.values())
    assert {k: scores[k] for k in KEYS} == pytest.approx(reference, abs=1e-6)
    assert 0 < scores["bleu_4"] < scores["bleu_1"] < 1
    assert 0 < scores["meteor"] < 1 and 0 < scores["rouge_l"] < 1 and scores["cider"] > 0


@requires_java
def test_modules_load_offline_and_match_pycocoevalcap(module_scores, reference):
    assert module_scores == pytest.approx({k: v for k, v in reference.items() if k != "meteor"}, abs=1e-6)


@requires_java
def test_ptb_tokenize_like_coco():
    preds, refs = ptb_tokenize(["A Dog, running!", ""], ["It's raining.", ["Cats -- and dogs...", "a b"]])
    assert preds == ["a dog running", ""]
    assert refs == [["it 's raining"], ["cats and dogs", "a b"]]


def test_ptb_tokenize_keeps_captions_aligned_whatever_a_decoder_emits():
    """Line breaks of any kind and control characters in a (garbage) prediction must not shift the
    captions after it: the Java tokenizer reads one caption per line."""
    garbage = ["a\u2028b", "c\x85d\re", "f\x00\x1bg\ufffd", "h\ni"]
    preds, refs = ptb_tokenize(garbage, [["a dog."], ["a cat."], ["two birds."], ["one fish."]])
    assert refs == [["a dog"], ["a cat"], ["two birds"], ["one fish"]]
    assert [p.split()[0] for p in preds] == ["a", "c", "fg", "h"]

def test_perfect_and_unrelated_predictions():
    perfect = [refs[0] for refs in TOKENS_REFS]
    bleu = bleu_scores(perfect, TOKENS_REFS, tokenize=False)
    assert bleu["bleu_4"] == pytest.approx(1.0, abs=1e-6) and bleu["bleu_1"] == pytest.approx(1.0, abs=1e-6)
    assert rouge_l_score(perfect, TOKENS_REFS, tokenize=False) == pytest.approx(1.0)
    assert cider_score(perfect, TOKENS_REFS, tokenize=False) > 1
    unrelated = ["purple elephants", "blue whales", "green tea"]
    assert bleu_scores(unrelated, TOKENS_REFS, tokenize=False)["bleu_1"] == pytest.approx(0.0, abs=1e-6)
    assert rouge_l_score(unrelated, TOKENS_REFS, tokenize=False) == 0.0
    assert cider_score(unrelated, TOKENS_REFS, tokenize=False) == 0.0


def test_empty_predictions_score_zero():
    perfect = [refs[0] for refs in TOKENS_REFS]
    # The empty caption scores 0 and the mean is over all three.
    assert rouge_l_score(["", *perfect[1:]], TOKENS_REFS, tokenize=False) == pytest.approx(2 / 3)
    assert cider_score(["", *perfect[1:]], TOKENS_REFS, tokenize=False) > 0
    empty = ["", " ", "\n"]
    bleu = bleu_scores(empty, TOKENS_REFS, tokenize=False)
    assert bleu == pytest.approx(dict.fromkeys(bleu, 0.0), abs=1e-6)
    assert rouge_l_score(empty, TOKENS_REFS, tokenize=False) == 0.0
    assert cider_score(empty, TOKENS_REFS, tokenize=False) == 0.0


def test_single_string_references_through_evaluate():
    bleu = load_metric("bleu")
    preds = ["a man riding a horse", "a cat"]
    as_lists = bleu.compute(predictions=preds, references=[["a man on a horse"], ["a cat on a couch"]],
                            tokenize=False)
    as_strings = bleu.compute(predictions=preds, references=["a man on a horse", "a cat on a couch"],
                              tokenize=False)
    assert as_lists == as_strings and set(as_lists) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4"}


def test_bad_inputs():
    for fn in (bleu_scores, meteor_score, rouge_l_score, cider_score, compute_caption_metrics):
        with pytest.raises(ValueError, match="got 2 predictions and 1 references"):
            fn(["a", "b"], [["a"]])
        with pytest.raises(ValueError, match="got 0 predictions and 0 references"):
            fn([], [])
    with pytest.raises(ValueError, match=r"references\[1\] must be one or more non-empty"):
        rouge_l_score(["a", "b"], [["a"], []], tokenize=False)
    with pytest.raises(ValueError, match=r"references\[0\]"):
        cider_score(["a"], [["a", " "]], tokenize=False)
    with pytest.raises(TypeError, match="not single strings"):
        bleu_scores("a cat", ["a cat"])
    with pytest.raises(TypeError, match="must be strings"):
        bleu_scores([None], ["a cat"])
    # Through evaluate, which on its own would raise an IndexError for empty lists.
    with pytest.raises(ValueError, match="got 0 predictions and 0 references"):
        load_metric("cider").compute(predictions=[], references=[])
    with pytest.raises(ValueError, match="got 1 predictions and 2 references"):
        load_metric("rouge_l").compute(predictions=["a"], references=[["a"], ["b"]])


@requires_java
def test_punctuation_only_reference_is_rejected():
    with pytest.raises(ValueError, match=r"references\[0\]"):
        ptb_tokenize(["a dog"], [["..."]])


def test_missing_java_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    for fn in (compute_caption_metrics, bleu_scores):
        with pytest.raises(RuntimeError, match="need Java.*default-jre-headless"):
            fn(["a dog"], [["a dog"]])
    with pytest.raises(RuntimeError, match="need Java"):
        meteor_score(["a dog"], [["a dog"]], tokenize=False)
    # Pre-tokenized BLEU, ROUGE-L and CIDEr need no Java.
    assert rouge_l_score(["a dog"], [["a dog"]], tokenize=False) == 1.0


def test_caption_metrics_are_shipped_metrics():
    assert CAPTION_METRICS == ("bleu", "meteor", "rouge_l", "cider")
    assert set(CAPTION_METRICS) <= set(METRIC_NAMES)  # so test_metrics checks their folders too


def test_distinct_ratio_catches_a_collapsed_captioner():
    references = [["a shoe.", "one shoe."], ["a bag."], ["a coat."], ["a bag."]]  # 3 distinct first refs
    assert distinct_ratio(["a bag."] * 4, references) == pytest.approx(1 / 3)
    assert distinct_ratio(["a shoe.", "a bag.", "a coat.", "a bag."], references) == 1.0
    assert distinct_ratio(["a", "b", "c", "d"], ["x", "y", "z", "z"]) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="one prediction per image"):
        distinct_ratio(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="at least one"):
        distinct_ratio([], [])
