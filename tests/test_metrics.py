"""Shipped evaluate metrics and the Trainer compute_metrics, against hand-computed values."""

import os

import numpy as np
import pytest

from stt_hf.metrics import (
    METRIC_NAMES,
    accuracy_score,
    compute_classification_metrics,
    load_metric,
    macro_f1_score,
    metric_path,
    top_k_accuracy,
)

# Two rows; row 0 ties classes 1 and 2 at the top, and its true class is 2.
TIED_SCORES = [[0.1, 0.5, 0.5, 0.2], [0.0, 0.9, 0.3, 0.1]]
TIED_REFS = [2, 1]
# Seven classes: the true class ranks 5th (in), 6th (out), 1st (in); then all scores tie: id 4 in, id 6 out.
RANKED_SCORES = [[7, 6, 5, 4, 3, 2, 1]] * 3 + [[1] * 7] * 2
RANKED_REFS = [4, 5, 0, 4, 6]
# Class 2 is in the references but never predicted.
F1_REFS = [0, 0, 1, 1, 2, 2]
F1_PREDS = [0, 0, 1, 0, 1, 1]
# Per class: F1(0) = 2*2 / (2*2 + 1 + 0) = 0.8, F1(1) = 2*1 / (2*1 + 2 + 1) = 0.4, F1(2) = 0.
F1_MACRO = (0.8 + 0.4 + 0.0) / 3


def test_accuracy():
    assert accuracy_score([0, 1, 2, 1], [0, 1, 1, 1]) == 0.75
    assert accuracy_score([], []) == 0.0
    with pytest.raises(ValueError, match="shape"):
        accuracy_score([0, 1], [0])


def test_top_k_ties_go_to_the_lower_class_id():
    assert top_k_accuracy(TIED_SCORES, TIED_REFS, k=1) == 0.5  # class 1 wins the tie in row 0
    assert top_k_accuracy(TIED_SCORES, TIED_REFS, k=2) == 1.0
    assert top_k_accuracy(RANKED_SCORES, RANKED_REFS, k=5) == 0.6
    assert top_k_accuracy(RANKED_SCORES, RANKED_REFS, k=100) == 1.0  # k clipped to the class count


def test_top_1_matches_argmax_accuracy():
    scores = np.random.default_rng(0).integers(0, 3, size=(200, 6)).astype(float)  # many ties
    refs = np.random.default_rng(1).integers(0, 6, size=200)
    assert top_k_accuracy(scores, refs, k=1) == accuracy_score(scores.argmax(1), refs)


def test_top_k_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        top_k_accuracy([0.1, 0.2], [0, 1])
    with pytest.raises(ValueError, match="outside"):
        top_k_accuracy(TIED_SCORES, [0, 4])
    with pytest.raises(ValueError, match="k must be"):
        top_k_accuracy(TIED_SCORES, TIED_REFS, k=0)


def test_macro_f1_with_a_class_absent_from_predictions():
    assert macro_f1_score(F1_PREDS, F1_REFS) == pytest.approx(F1_MACRO)
    # A class only in the predictions counts too: F1(0) = 2/3, F1(1) = 0.
    assert macro_f1_score([0, 1], [0, 0]) == pytest.approx(1 / 3)
    # An explicit label list: class 3 occurs nowhere and counts as 0.
    assert macro_f1_score(F1_PREDS, F1_REFS, labels=[0, 1, 2, 3]) == pytest.approx(1.2 / 4)
    assert macro_f1_score([1, 1], [1, 1]) == 1.0


def test_macro_f1_and_accuracy_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    refs, preds = rng.integers(0, 7, 300), rng.integers(0, 6, 300)
    assert macro_f1_score(preds, refs) == pytest.approx(metrics.f1_score(refs, preds, average="macro"))
    assert accuracy_score(preds, refs) == pytest.approx(metrics.accuracy_score(refs, preds))


def test_metric_folders_follow_evaluate_layout():
    for name in METRIC_NAMES:
        assert os.path.isfile(os.path.join(metric_path(name), f"{name}.py"))
    with pytest.raises(ValueError, match="Unknown metric 'wer'"):
        metric_path("wer")


def test_evaluate_modules_load_offline_and_compute():
    accuracy = load_metric("accuracy")
    assert accuracy.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1]) == {"accuracy": 0.75}
    top5 = load_metric("top5_accuracy")
    assert top5.compute(predictions=RANKED_SCORES, references=RANKED_REFS) == {"top5_accuracy": 0.6}
    assert top5.compute(predictions=TIED_SCORES, references=TIED_REFS, k=1) == {"top5_accuracy": 0.5}
    f1 = load_metric("macro_f1")
    for pred, ref in zip(F1_PREDS, F1_REFS, strict=True):  # incremental use
        f1.add(prediction=pred, reference=ref)
    assert f1.compute()["macro_f1"] == pytest.approx(F1_MACRO)


def test_compute_classification_metrics_with_eval_prediction():
    from transformers import EvalPrediction

    logits = np.array(RANKED_SCORES, dtype=np.float32)
    out = compute_classification_metrics(EvalPrediction(predictions=logits, label_ids=np.array(RANKED_REFS)))
    # argmax is class 0 everywhere: only row 2 (label 0) is right; F1(0) = 2/(2+4) and 0 for 4, 5, 6.
    assert out == pytest.approx({"accuracy": 0.2, "top5_accuracy": 0.6, "macro_f1": (1 / 3) / 4})
    assert all(isinstance(v, float) for v in out.values())


def test_compute_classification_metrics_with_fewer_than_five_classes():
    logits = (np.array(TIED_SCORES), np.zeros((2, 7)))  # a tuple: the logits come first
    out = compute_classification_metrics((logits, np.array(TIED_REFS)))
    assert out["accuracy"] == 0.5
    assert out["top5_accuracy"] == 1.0  # k = min(5, 4 classes)
    # Predictions [1, 1], labels [2, 1]: F1(1) = 2/3, F1(2) = 0.
    assert out["macro_f1"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="expected logits"):
        compute_classification_metrics((np.zeros(3), np.zeros(3)))
