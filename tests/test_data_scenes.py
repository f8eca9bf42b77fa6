"""fashion_scenes: determinism, splits, captions against annotations, masks, option errors, the cache, the
train-caption wiring and the scene metrics (object F1, relation accuracy)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from stt_hf.data import scenes
from stt_hf.data.classification import DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_DIR_ENV, read_fashion_mnist
from stt_hf.data.scene_captions import describe_scene, parse_caption, reading_order, relation
from stt_hf.data.scenes import VISIBLE_LEVEL, SceneOptions, load_fashion_scenes
from stt_hf.metrics import SCENE_METRICS, load_metric, object_f1_scores, relation_accuracy_score

pytestmark = pytest.mark.skipif(
    not os.path.isdir(os.environ.get(FASHION_MNIST_DIR_ENV) or DEFAULT_FASHION_MNIST_DIR),
    reason="needs the Fashion-MNIST files (Debian package dataset-fashion-mnist)")

SMALL = dict(train_size=40, validation_size=10, test_size=10)
TINY = dict(train_size=3, validation_size=2, test_size=2)
# sha256 of the small test split (pixels of image and mask, captions, objects): any change to the
# generator changes it; then bump GENERATOR_VERSION and update this digest.
TEST_SPLIT_DIGEST = "b6a8885a2eeaf21641461b7493d4f6a22fbd835ecae88e23ca749663891716d6"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_fashion_scenes(**SMALL, cache_dir=tmp_path_factory.mktemp("scenes"), progress=False)


@pytest.fixture(scope="module")
def fashion_mnist():
    return read_fashion_mnist()


def _digest(ds) -> str:
    h = hashlib.sha256()
    for row in ds:
        h.update(np.asarray(row["image"]).tobytes())
        h.update(np.asarray(row["mask"]).tobytes())
        h.update(json.dumps([row["captions"], row["objects"]], sort_keys=True).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------- the dataset


def test_columns_sizes_and_modes(small):
    assert {split: len(ds) for split, ds in small.items()} == {"train": 40, "validation": 10, "test": 10}
    row = small["train"][0]
    assert set(row) == {"image", "captions", "objects", "mask"}
    assert row["image"].mode == row["mask"].mode == "L" and row["image"].size == (64, 64)
    assert set(row["objects"]) == {"class_id", "box", "source_index"}
    counts = Counter(len(objects["class_id"]) for objects in small["train"]["objects"])
    assert set(counts) == {1, 2, 3, 4}


def test_same_bytes_every_time(small):
    """A fixed digest, and scene i does not depend on the split's size (the first 10 of 40 train scenes
    are the 10 train scenes of a smaller set)."""
    assert _digest(small["test"]) == TEST_SPLIT_DIGEST
    options = SceneOptions(**SMALL).check()
    again = scenes.generate_split("train", 10, options)
    assert again["captions"] == small["train"]["captions"][:10]
    assert again["objects"] == small["train"]["objects"][:10]


def test_seed_changes_the_scenes(small):
    other = scenes.generate_split("test", 10, SceneOptions(**SMALL, seed=1).check())
    assert other["objects"] != small["test"]["objects"]


def test_items_come_from_their_split_only(small, fashion_mnist):
    """Train items from the train file; validation and test from disjoint halves of the test file; each
    recorded class is the Fashion-MNIST label of its source item."""
    half = len(fashion_mnist["test"][1]) // 2
    used = {}
    for split, ds in small.items():
        labels = fashion_mnist["train" if split == "train" else "test"][1]
        used[split] = set()
        for objects in ds["objects"]:
            assert [int(labels[i]) for i in objects["source_index"]] == objects["class_id"]
            used[split].update(objects["source_index"])
    assert all(i < half for i in used["validation"]) and all(i >= half for i in used["test"])
    assert not used["validation"] & used["test"]


def test_every_reference_says_what_the_annotations_say(small):
    for ds in small.values():
        for captions, objects in zip(ds["captions"], ds["objects"], strict=True):
            classes, boxes = objects["class_id"], objects["box"]
            assert reading_order(classes, boxes) == list(range(len(classes)))  # stored in reading order
            assert captions == describe_scene(classes, boxes)
            assert len(captions) == (4 if len(classes) > 1 else 2)
            for caption in captions:
                parsed = parse_caption(caption)
                assert parsed.items == Counter(classes), caption
                assert relation_accuracy_score([caption], [objects]) == (1.0 if parsed.relations else 0.0)
            # The two chains state one relation per neighbouring pair, each true of the boxes.
            assert len(parse_caption(captions[0]).relations) == len(classes) - 1
            for (a, name, b), i in zip(parse_caption(captions[0]).relations, range(len(classes) - 1),
                                       strict=True):
                assert (a, b) == (classes[i], classes[i + 1]) and name == relation(boxes[i], boxes[i + 1])


def test_mask_agrees_with_image_boxes_and_classes(small):
    for row in small["test"]:
        image, mask = np.asarray(row["image"]), np.asarray(row["mask"])
        assert np.array_equal(mask > 0, image >= VISIBLE_LEVEL)
        classes, boxes = row["objects"]["class_id"], row["objects"]["box"]
        covered = np.zeros_like(mask, dtype=bool)
        for class_id, (x0, y0, x1, y1) in zip(classes, boxes, strict=True):
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            inside = mask[y0:y1, x0:x1] == class_id + 1
            assert inside.any()  # each item shows
            covered[y0:y1, x0:x1] |= inside
        assert np.array_equal(covered, mask > 0)  # every labelled pixel is in a box of its class
        assert set(np.unique(mask)) == {0, *(c + 1 for c in classes)}


def test_layout_bounds(small):
    """Overlap at most a tenth of the smaller box; centres S/16 apart horizontally, and horizontal and
    vertical centre offsets S/16 apart, so order and relations are clear in the picture."""
    margin = 64 // 16
    for objects in small["train"]["objects"]:
        boxes = objects["box"]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                overlap = (max(0, min(a[2], b[2]) - max(a[0], b[0]))
                           * max(0, min(a[3], b[3]) - max(a[1], b[1])))
                smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
                assert overlap <= 0.1 * smaller
                dx, dy = abs(a[0] + a[2] - b[0] - b[2]) / 2, abs(a[1] + a[3] - b[1] - b[3]) / 2
                assert dx >= margin and abs(dx - dy) >= margin


@pytest.mark.parametrize("canvas", [128, 224])
def test_larger_canvases(canvas):
    options = SceneOptions(canvas=canvas, **TINY).check()
    data = scenes.generate_split("test", 2, options)
    for objects in data["objects"]:
        sides = [max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in objects["box"]]
        assert all(side <= canvas // 2 for side in sides) and max(sides) >= canvas // 8


@pytest.mark.parametrize("options, message", [
    (dict(canvas=20), "canvas=20 is not allowed: canvas must be an integer from 28"),
    (dict(canvas=64.0), "canvas=64.0"),
    (dict(max_items=0), "max_items=0 is not allowed"),
    (dict(max_items=10), "max_items must be an integer from 1 to 9"),
    (dict(max_items=5), "max_items=5 items do not fit a 64 px canvas with items of at least 16 px: at most"),
    (dict(canvas=128, item_size=(40, 60)), "max_items=4 items do not fit a 128 px canvas"),
    (dict(min_items=3, max_items=2), "min_items=3 is not allowed: min_items must be an integer from 1 to "),
    (dict(item_size=(16, 80)), r"item_size=\(16, 80\) with canvas=64: .*no item larger than the canvas"),
    (dict(item_size=(4, 16)), "item_size=.*8 <= smallest"),
    (dict(item_size=16), "item_size=16 with canvas=64: item sides must be two integers"),
    (dict(train_size=0), "train_size=0 is not allowed: train_size must be an integer a positive number"),
    (dict(test_size=2.5), "test_size=2.5"),
    (dict(seed=-1), "seed=-1 is not allowed"),
])
def test_impossible_options_fail_at_once(options, message, tmp_path, monkeypatch):
    monkeypatch.setenv("STT_HF_FASHION_MNIST_DIR", str(tmp_path / "absent"))  # fails before reading data
    with pytest.raises(ValueError, match=message):
        load_fashion_scenes(**{**TINY, **options}, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------- cache


def _count_generations(monkeypatch):
    calls = []
    real = scenes.generate_fashion_scenes

    def counting(options, progress=True):
        calls.append(options)
        return real(options, progress)

    monkeypatch.setattr(scenes, "generate_fashion_scenes", counting)
    return calls


def test_cache_is_reused_and_regenerated_on_a_new_version(tmp_path, monkeypatch):
    calls = _count_generations(monkeypatch)
    first = load_fashion_scenes(**TINY, cache_dir=tmp_path, progress=False)
    again = load_fashion_scenes(**TINY, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1 and again["test"]["captions"] == first["test"]["captions"]
    assert [p.name for p in tmp_path.iterdir()] == [SceneOptions(**TINY).cache_name()]
    load_fashion_scenes(**TINY, seed=1, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2  # other options, other folder

    monkeypatch.setattr(scenes, "GENERATOR_VERSION", scenes.GENERATOR_VERSION + 1)
    load_fashion_scenes(**TINY, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["v1", "v1", "v2"]


def test_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(scenes.SCENES_CACHE_ENV, str(tmp_path))
    load_fashion_scenes(**TINY, progress=False)
    assert (tmp_path / SceneOptions(**TINY).cache_name() / "dataset_dict.json").is_file()


def test_an_interrupted_generation_is_never_read(tmp_path, monkeypatch):
    import datasets

    real_save = datasets.DatasetDict.save_to_disk

    def save_then_die(self, path, **kwargs):
        self["train"].save_to_disk(os.path.join(path, "train"))  # part of the splits written
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        load_fashion_scenes(**TINY, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # no final folder, and the temporary one removed

    # A process killed outright leaves its temporary folder; it is never taken for the cache.
    name = SceneOptions(**TINY).cache_name()
    stale = tmp_path / f".{name}.killed.tmp"
    stale.mkdir()
    (stale / "dataset_dict.json").write_text('{"splits": ["train"]}')
    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", real_save)
    calls = _count_generations(monkeypatch)
    dsd = load_fashion_scenes(**TINY, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1 and set(dsd) == {"train", "validation", "test"}
    assert (tmp_path / name / "dataset_dict.json").is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    shutil.rmtree(stale)


# ------------------------------------------------------------------------------------ grammar


BAG, COAT, SNEAKER, SHIRT, BOOT = 8, 4, 7, 6, 9
# A bag, a coat right of it and a sneaker below the coat: centres (5, 5), (25, 5), (27, 35).
SCENE = {"class_id": [BAG, COAT, SNEAKER], "box": [[0, 0, 10, 10], [20, 0, 30, 10], [22, 30, 32, 40]]}


def test_describe_scene_wording():
    assert describe_scene(SCENE["class_id"], SCENE["box"]) == [
        "a bag left of a coat above a sneaker.",
        "a bag, a coat and a sneaker.",
        "from left to right: a bag, a coat and a sneaker.",
        "a sneaker below a coat right of a bag.",
    ]
    assert describe_scene([BOOT], [[3, 3, 20, 20]]) == ["an ankle boot.", "one ankle boot."]
    two_bags = describe_scene([BAG, COAT, BAG], [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    assert two_bags[1] == "two bags and a coat."
    trousers = describe_scene([1, 1], [[0, 0, 10, 10], [5, 30, 15, 40]])
    assert trousers[:2] == ["a pair of trousers above a pair of trousers.", "two pairs of trousers."]


def test_wording_ignores_the_drawing_order():
    """Shuffling the items (the order they were drawn in) changes no caption; equal centres are ordered top
    to bottom, then by class id."""
    rng = random.Random(0)
    for _ in range(5):
        order = list(range(3))
        rng.shuffle(order)
        classes, boxes = [SCENE["class_id"][i] for i in order], [SCENE["box"][i] for i in order]
        assert describe_scene(classes, boxes) == describe_scene(SCENE["class_id"], SCENE["box"])
    assert reading_order([BAG, COAT], [[0, 20, 10, 30], [0, 0, 10, 10]]) == [1, 0]
    assert reading_order([BAG, COAT], [[0, 0, 10, 10], [0, 0, 10, 10]]) == [1, 0]


def test_relation_rule():
    assert relation([0, 0, 10, 10], [20, 0, 30, 10]) == "left of"
    assert relation([20, 0, 30, 10], [0, 0, 10, 10]) == "right of"
    assert relation([0, 0, 10, 10], [5, 30, 15, 40]) == "above"
    assert relation([5, 30, 15, 40], [0, 0, 10, 10]) == "below"
    assert relation([0, 0, 10, 10], [10, 10, 20, 20]) == "left of"  # |dx| == |dy|: horizontal
    assert relation([0, 0, 10, 10], [0, 0, 10, 10]) is None


def test_parse_caption_reads_any_string():
    parsed = parse_caption("A pair of trousers left of two pairs of trousers below an ankle boot, a t-shirt.")
    assert parsed.items == Counter({1: 3, BOOT: 1, 0: 1})
    assert parsed.relations == ((1, "left of", 1), (1, "below", BOOT))
    assert parse_caption("from left to right: a shirt, a t-shirt").items == Counter({SHIRT: 1, 0: 1})
    assert parse_caption("from left to right: a shirt, a t-shirt").relations == ()
    for junk in ("", "zzz", "left of above", "two", "of a the"):
        assert parse_caption(junk).items == Counter() and parse_caption(junk).relations == ()


# ------------------------------------------------------------------------------------ metrics


PERFECT = "a bag left of a coat above a sneaker."
WRONG_CLASS = "a bag left of a shirt above a sneaker."
MISSING = "a bag left of a coat."
FALSE_RELATION = "a bag right of a coat above a sneaker."


@pytest.mark.parametrize("caption, f1, precision, recall, relations", [
    (PERFECT, 1.0, 1.0, 1.0, 1.0),
    (WRONG_CLASS, 2 / 3, 2 / 3, 2 / 3, 0.0),  # both relations involve the shirt: none is counted
    (MISSING, 0.8, 1.0, 2 / 3, 1.0),
    (FALSE_RELATION, 1.0, 1.0, 1.0, 0.5),
    ("two bags and a coat.", 2 / 3, 2 / 3, 2 / 3, 0.0),
    ("a bag left of a bag.", 0.4, 0.5, 1 / 3, 0.0),  # one bag in the scene: the relation is not counted
    ("zzz", 0.0, 0.0, 0.0, 0.0),
    ("", 0.0, 0.0, 0.0, 0.0),
])
def test_scene_metrics_exact_values(caption, f1, precision, recall, relations):
    scores = object_f1_scores([caption], [SCENE])
    assert scores == pytest.approx(dict(object_f1=f1, object_precision=precision, object_recall=recall))
    assert relation_accuracy_score([caption], [SCENE]) == pytest.approx(relations)


def test_scene_metrics_as_evaluate_modules_over_a_corpus():
    """Micro averages: objects 10 right of 11 named and 12 present; relations 4 of 5 counted hold."""
    predictions = [PERFECT, WRONG_CLASS, MISSING, FALSE_RELATION]
    objects = [dict(SCENE, source_index=[1, 2, 3])] * 4  # extra keys of the dataset are accepted
    object_scores = load_metric("object_f1").compute(predictions=predictions, references=objects)
    assert object_scores == pytest.approx(dict(object_f1=20 / 23, object_precision=10 / 11,
                                               object_recall=10 / 12))
    relation_scores = load_metric("relation_accuracy").compute(predictions=predictions, references=objects)
    assert relation_scores == pytest.approx({"relation_accuracy": 0.8})


def test_scene_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="1 predictions and 2"):
        object_f1_scores([PERFECT], [SCENE, SCENE])
    with pytest.raises(ValueError, match="one box"):
        relation_accuracy_score([PERFECT], [{"class_id": [1, 2], "box": [[0, 0, 1, 1]]}])
    with pytest.raises(TypeError):
        load_metric("object_f1").compute(predictions=PERFECT, references=[SCENE])


def test_compute_caption_metrics_adds_the_scene_metrics(monkeypatch):
    """The scene metrics join the caption scores when the objects are given. Only BLEU runs here, on
    untokenized captions: METEOR and the PTB tokenizer start Java, tested with the caption metrics."""
    import stt_hf.metrics as metrics
    from stt_hf.metrics import compute_caption_metrics
    from stt_hf.metrics.captioning import check_caption_inputs

    monkeypatch.setattr(metrics, "CAPTION_METRICS", ("bleu",))
    monkeypatch.setattr(metrics, "ptb_tokenize", check_caption_inputs)
    references = [describe_scene(SCENE["class_id"], SCENE["box"])] * 2
    scores = compute_caption_metrics([PERFECT, MISSING], references, [SCENE] * 2)
    assert scores["bleu_4"] > 0.5 and scores["object_f1"] == pytest.approx(2 * 5 / 11)
    assert scores["relation_accuracy"] == 1.0 and set(SCENE_METRICS) <= set(scores)
    assert "object_f1" not in compute_caption_metrics([PERFECT], references[:1])


# ------------------------------------------------------------------------- captioning wiring


def test_train_caption_loads_fashion_scenes(tmp_path, monkeypatch):
    """train-caption's own argument parsing and dataset loading (not a training run)."""
    from stt_hf.data.captions import load_caption_dataset
    from stt_hf.tasks.train_caption import load_tokenizer, parse_args

    monkeypatch.setenv(scenes.SCENES_CACHE_ENV, str(tmp_path))
    model_args, data_args, training_args = parse_args(
        ["--dataset", "fashion_scenes", "--max_train_samples", "40", "--max_eval_samples", "10",
         "--output_dir", str(tmp_path / "out")])
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_eval_samples}
    dsd = load_caption_dataset(data_args.dataset, seed=training_args.seed, limits=limits)
    assert {split: len(ds) for split, ds in dsd.items()} == {"train": 40, "validation": 10, "test": 10}
    assert set(dsd["test"].column_names) == {"image", "caption", "captions", "objects"}
    assert dsd["test"]["caption"] == [refs[0] for refs in dsd["test"]["captions"]]
    # The same scenes as the Python API's, whatever the training seed.
    direct = load_fashion_scenes(**SMALL, cache_dir=tmp_path, progress=False)
    assert dsd["test"]["objects"] == direct["test"]["objects"]
    # Every reference fits the captioner's token limit.
    captions = [c for refs in dsd["train"]["captions"] for c in refs]
    tokenizer = load_tokenizer(model_args, captions)
    longest = max(len(ids) for ids in tokenizer(captions)["input_ids"])
    assert longest < model_args.max_caption_length


def test_scene_grid_picture(tmp_path):
    path = scenes.save_scene_grid(tmp_path / "grid.png", count=2, columns=2)
    from PIL import Image

    with Image.open(path) as image:
        assert image.size[0] > 200 and image.size[1] > 200
    assert Path(path).stat().st_size > 5_000
