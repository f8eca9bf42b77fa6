"""Image-caption scores computed as the COCO caption evaluation does (pycocoevalcap).

Shared by the `bleu`, `meteor`, `rouge_l` and `cider` evaluate modules and `compute_caption_metrics`
(`scene_features` and `check_scene_inputs` by the scene metrics, `object_f1` and `relation_accuracy`).
Every scorer takes `predictions` (one caption per image) and `references` (a list of reference captions
per image, or one string per image). With `tokenize=True` both sides first go through the Stanford PTB
tokenizer bundled with pycocoevalcap (lower-cased, punctuation removed), as COCO does; that tokenizer and
METEOR run Java. Pass `tokenize=False` for captions already tokenized that way (whitespace-separated
tokens), e.g. to tokenize once for several metrics. pycocoevalcap (the `caption` extra) is imported on
first use, so this module imports without it.

Empty predictions are scored as they are, without a placeholder token (the scorers accept them): they match
nothing, so that caption scores 0 and adds length 0 to BLEU's brevity penalty. References must not be empty.
"""

from __future__ import annotations

import shutil
import unicodedata


def require_java() -> None:
    """Raise RuntimeError unless a `java` executable is on PATH."""
    if shutil.which("java") is None:
        raise RuntimeError(
            "METEOR and PTB tokenization need Java, but no 'java' is on PATH; install a JRE "
            "(Debian/Ubuntu: apt-get install default-jre-headless), or use tokenize=False for BLEU, "
            "ROUGE-L and CIDEr on pre-tokenized captions"
        )


def caption_features():
    """`evaluate` feature options: one or more reference strings per prediction, or exactly one string."""
    import datasets

    string = datasets.Value("string")
    return [
        datasets.Features({"predictions": string, "references": datasets.Sequence(string)}),
        datasets.Features({"predictions": string, "references": string}),
    ]


def scene_features():
    """`evaluate` features of the scene metrics: a caption and its scene's objects (class ids and boxes)."""
    import datasets

    ints = datasets.Sequence(datasets.Value("int64"))
    return datasets.Features({"predictions": datasets.Value("string"),
                              "references": {"class_id": ints, "box": datasets.Sequence(ints)}})


def check_scene_inputs(predictions, objects) -> tuple[list[str], list[dict]]:
    """Validate captions and scene annotations (`fashion_scenes` `objects`: `class_id` and `box` lists of
    equal length, boxes [x0, y0, x1, y1]); return (captions, [{"class_id", "box"}] without other keys)."""
    if isinstance(predictions, str) or isinstance(objects, dict):
        raise TypeError("predictions and references must be lists (one caption and one objects dict per "
                        "image), not a single caption or objects dict")
    predictions, objects = list(predictions), list(objects)
    if len(predictions) != len(objects) or not predictions:
        raise ValueError("need one or more predictions and as many scene annotations, "
                         f"got {len(predictions)} predictions and {len(objects)} annotations")
    if not all(isinstance(p, str) for p in predictions):
        raise TypeError("predictions must be strings")
    checked = []
    for i, scene in enumerate(objects):
        if not isinstance(scene, dict) or "class_id" not in scene or "box" not in scene:
            raise ValueError(f"references[{i}] must be a dict with 'class_id' and 'box' lists, got {scene!r}")
        class_ids, boxes = [int(c) for c in scene["class_id"]], [[int(v) for v in b] for b in scene["box"]]
        if len(class_ids) != len(boxes) or any(len(b) != 4 for b in boxes):
            raise ValueError(f"references[{i}]: need one box [x0, y0, x1, y1] per class id, got {scene!r}")
        checked.append({"class_id": class_ids, "box": boxes})
    return predictions, checked


def check_caption_inputs(predictions, references) -> tuple[list[str], list[list[str]]]:
    """Validate captions and return them as (list of str, list of list of str); a str reference -> [str]."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be lists of captions, not single strings")
    predictions = list(predictions)
    references = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
    if len(predictions) != len(references) or not predictions:
        raise ValueError(
            "need one or more predictions and as many references, "
            f"got {len(predictions)} predictions and {len(references)} references"
        )
    if not all(isinstance(p, str) for p in predictions):
        raise TypeError("predictions must be strings")
    for i, refs in enumerate(references):
        if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise ValueError(f"references[{i}] must be one or more non-empty strings, got {refs!r}")
    return predictions, references


def one_line(text: str) -> str:
    """`text` as one line for the Java tokenizer, which reads one caption per line: every Unicode line
    break and space collapsed to one space, other control characters dropped (a half-trained byte-level
    decoder can emit any of them, and one stray line break would shift every later caption)."""
    kept = "".join(ch for ch in text if ch.isspace() or unicodedata.category(ch) != "Cc")
    return " ".join(kept.split())


def ptb_tokenize(predictions, references) -> tuple[list[str], list[list[str]]]:
    """PTB-tokenize predictions and references (one Java call), as the COCO caption evaluation does."""
    predictions, references = check_caption_inputs(predictions, references)
    require_java()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    flat = [one_line(c) for c in predictions + [r for refs in references for r in refs]]
    tokenized = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(flat)})
    tokens = iter(tokenized[i][0] for i in range(len(flat)))
    predictions = [next(tokens) for _ in predictions]
    references = [[next(tokens) for _ in refs] for refs in references]
    # Check again: a reference of punctuation only is empty once tokenized.
    return check_caption_inputs(predictions, references)


def _scorer_inputs(predictions, references, tokenize: bool) -> tuple[dict, dict]:
    """pycocoevalcap's inputs: ({i: [references]}, {i: [prediction]})."""
    if tokenize:
        predictions, references = ptb_tokenize(predictions, references)
    else:
        predictions, references = check_caption_inputs(predictions, references)
    # The scorers split on single spaces and METEOR reads one line per caption: collapse whitespace.
    gts = {i: [" ".join(r.split()) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(p.split())] for i, p in enumerate(predictions)}
    return gts, res


def bleu_scores(predictions, references, tokenize: bool = True) -> dict[str, float]:
    """Corpus BLEU-1..4 (pycocoevalcap `Bleu(4)`, closest reference length): keys `bleu_1`..`bleu_4`."""
    from pycocoevalcap.bleu.bleu import Bleu

    gts, res = _scorer_inputs(predictions, references, tokenize)
    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {f"bleu_{n}": float(s) for n, s in enumerate(scores, start=1)}


def meteor_score(predictions, references, tokenize: bool = True) -> float:
    """METEOR 1.5 (pycocoevalcap's jar, English, `-norm`): its aggregate score over all captions."""
    gts, res = _scorer_inputs(predictions, references, tokenize)
    require_java()
    from pycocoevalcap.meteor.meteor import Meteor

    # '|||' separates fields in METEOR's input lines; pycocoevalcap strips it from hypotheses only.
    gts = {i: [" ".join(r.replace("|||", " ").split()) for r in refs] for i, refs in gts.items()}
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    finally:
        # Stop the JVM (2 GB heap) now rather than at garbage collection, where Meteor.__del__ would wait
        # forever on a lock left held by a failed compute_score.
        if scorer.lock.locked():
            scorer.lock.release()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    return float(score)


def rouge_l_score(predictions, references, tokenize: bool = True) -> float:
    """COCO ROUGE-L (pycocoevalcap `Rouge`): per caption, LCS F-measure (beta 1.2) from the best precision
    and the best recall over its references; the mean over captions."""
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _scorer_inputs(predictions, references, tokenize)
    return float(Rouge().compute_score(gts, res)[0])


def cider_score(predictions, references, tokenize: bool = True) -> float:
    """COCO CIDEr (pycocoevalcap `Cider`, i.e. CIDEr-D: n = 1..4, sigma 6, x10), IDF from these references."""
    from pycocoevalcap.cider.cider import Cider

    gts, res = _scorer_inputs(predictions, references, tokenize)
    return float(Cider().compute_score(gts, res)[0])
