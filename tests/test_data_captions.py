"""Caption dataset loading and validation, on the installed Debian data and tiny files in the real formats."""

import io
import unicodedata

import datasets
import numpy as np
import pytest
from PIL import Image

from stt_hf.data import captions as caption_data
from stt_hf.data.captions import load_caption_dataset, validate_caption_dataset
from stt_hf.data.common import to_rgb

# Counts of tuxpaint-stamps-default 2022.06.04: 785 described PNG stamps, 247 of them under symbols/.
TUXPAINT_ALL, TUXPAINT_NO_SYMBOLS = 785, 538


def sizes(dsd):
    return {split: len(ds) for split, ds in dsd.items()}


def paths(ds):
    """The `path` stored with each image (the stamp's file for tuxpaint), without decoding."""
    return [row["path"] for row in ds.cast_column("image", datasets.Image(decode=False))["image"]]


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def caption_table(captions, image_column="image", caption_column="caption", **extra):
    """A Dataset of 4x4 gray PNGs (row i filled with i) and the given captions."""
    features = {image_column: datasets.Image(), caption_column: datasets.Value("string")}
    features.update({k: datasets.Value("string") for k in extra})
    images = [png(Image.new("L", (4, 4), i)) for i in range(len(captions))]
    rows = {image_column: images, caption_column: list(captions), **extra}
    return datasets.Dataset.from_dict(rows, features=datasets.Features(features))


@pytest.fixture(scope="module")
def tuxpaint():
    return load_caption_dataset("tuxpaint")


# ---------------------------------------------------------------------------- tuxpaint


def test_tuxpaint_real_data(tuxpaint):
    assert list(tuxpaint) == ["train", "validation", "test"]
    assert sizes(tuxpaint) == {"train": 430, "validation": 54, "test": 54}
    assert tuxpaint["train"].column_names == ["image", "caption"]
    assert isinstance(tuxpaint["train"].features["image"], datasets.Image)
    split_paths = {split: paths(ds) for split, ds in tuxpaint.items()}
    every = sum(split_paths.values(), [])
    assert len(set(every)) == TUXPAINT_NO_SYMBOLS  # disjoint and complete
    assert not any(p.startswith("symbols/") for p in every)
    for ds in tuxpaint.values():
        assert all(isinstance(c, str) and c.strip() == c and c for c in ds["caption"])
    assert "A ripe, red tomato!" in sum((list(ds["caption"]) for ds in tuxpaint.values()), [])
    for row in tuxpaint["test"].select(range(10)):
        assert row["image"].mode == "RGB" and 10 <= min(row["image"].size)


def test_tuxpaint_rows_with_and_without_symbols():
    keys, captions, _ = caption_data._tuxpaint_rows(drop_symbols=False)
    assert len(keys) == len(captions) == TUXPAINT_ALL
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert sum(k.startswith("symbols/") for k in keys) == TUXPAINT_ALL - TUXPAINT_NO_SYMBOLS
    assert not any(k.endswith("_mirror.png") for k in keys)
    assert captions[keys.index("food/vegetables/tomato.png")] == "A ripe, red tomato!"
    assert len(caption_data._tuxpaint_rows(drop_symbols=True)[0]) == TUXPAINT_NO_SYMBOLS


def test_tuxpaint_splits_are_seeded_and_limits_are_subsets(tuxpaint):
    limits = {"train": 6, "validation": 4, "test": 3}
    a = load_caption_dataset("tuxpaint", limits=limits)
    assert sizes(a) == limits
    assert {s: paths(ds) for s, ds in a.items()} == {s: paths(ds) for s, ds in
                                                     load_caption_dataset("Tuxpaint", limits=limits).items()}
    for split, ds in a.items():
        assert set(paths(ds)) <= set(paths(tuxpaint[split]))
    other = load_caption_dataset("tuxpaint", seed=1, limits={"train": 1, "validation": 1})
    assert paths(other["test"]) != paths(tuxpaint["test"])
    one = {"train": 1, "validation": 1, "test": 1}
    assert sizes(load_caption_dataset("tuxpaint", drop_symbols=False, limits=one)) == one


def test_tuxpaint_format_from_a_fake_stamps_tree(tmp_path, monkeypatch):
    def stamp(relative, image, text=None):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if image is not None:
            image.save(path)
        if text is not None:
            path.with_suffix(".txt").write_text(text, encoding="utf-8")

    see_through = Image.new("RGBA", (6, 4), (255, 0, 0, 0))
    see_through.putpixel((0, 0), (255, 0, 0, 255))
    for i in range(10):
        stamp(f"animals/cat{i}.png", see_through, f"A cat {i}.\nfr.utf8=Un chat {i}.\n")
    stamp("animals/cat0_mirror.png", see_through)  # mirrored duplicate without a description
    stamp("symbols/a.png", Image.new("LA", (4, 4)), "The letter a.")
    stamp("plants/tree.svg", None, "A tree.")  # SVG-only stamp
    (tmp_path / "plants/tree.svg").write_text("<svg/>")
    monkeypatch.setenv(caption_data.TUXPAINT_DIR_ENV, str(tmp_path))

    dsd = load_caption_dataset("tuxpaint")
    assert sizes(dsd) == {"train": 8, "validation": 1, "test": 1}
    assert sorted(sum((list(ds["caption"]) for ds in dsd.values()), [])) == [f"A cat {i}." for i in range(10)]
    image = dsd["test"][0]["image"]
    assert image.mode == "RGB" and image.size == (6, 4)
    assert image.getpixel((0, 0)) == (255, 0, 0) and image.getpixel((1, 0)) == (255, 255, 255)
    assert sum(sizes(load_caption_dataset("tuxpaint", drop_symbols=False)).values()) == 11


def test_tuxpaint_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(caption_data.TUXPAINT_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"apt-get install tuxpaint-stamps-default"):
        load_caption_dataset("tuxpaint")


# ------------------------------------------------------------------------------- emoji


def test_emoji_real_data():
    chars, captions, render = caption_data._emoji_rows()
    assert 1200 <= len(chars) <= 1400 and len(set(chars)) == len(chars)
    assert captions[chars.index("\U0001f600")] == "grinning face"
    assert all(c == unicodedata.name(ch).lower() for ch, c in zip(chars, captions, strict=True))
    image = np.asarray(render("\U0001f600"))
    assert image.shape == (72, 72, 3)
    assert (image[0, 0] == 255).all() and (image[36, 36] != 255).any()  # white corner, colored middle

    limits = {"train": 8, "validation": 3, "test": 3}
    dsd = load_caption_dataset("emoji", limits=limits)
    assert sizes(dsd) == limits
    assert set(sum((list(ds["caption"]) for ds in dsd.values()), [])) <= set(captions)
    assert dsd["train"][0]["image"].mode == "RGB"


# ---------------------------------------------------------------------- generic sources


def test_imagefolder_with_metadata_csv(tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    modes = ["L", "P", "RGBA", "CMYK", "1"]
    lines = ["file_name,caption"]
    for i in range(10):
        mode = modes[i % len(modes)]
        image = Image.new(mode, (8 + i, 8))  # the width tells which file a row came from
        name = f"{i}.jpg" if mode == "CMYK" else f"{i}.png"  # PNG cannot hold CMYK
        image.save(root / name)
        lines.append(f'{name},"picture {i}, in {mode}"')
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")

    dsd = load_caption_dataset(str(root), cache_dir=str(tmp_path / "cache"))
    assert sizes(dsd) == {"train": 8, "validation": 1, "test": 1}
    assert dsd["train"].column_names == ["image", "caption"]
    seen = []
    for ds in dsd.values():
        for row in ds:
            i = row["image"].size[0] - 8
            assert row["caption"] == f"picture {i}, in {modes[i % len(modes)]}"
            assert to_rgb(row["image"]).mode == "RGB"
            seen.append(i)
    assert sorted(seen) == list(range(10))


def test_imagefolder_with_a_blank_caption_fails_at_load(tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    for i in range(10):
        Image.new("RGB", (4, 4)).save(root / f"{i}.png")
    captions = ["a photo"] * 10
    captions[3] = ""  # read back as a missing value
    (root / "metadata.csv").write_text("file_name,caption\n" + "".join(
        f"{i}.png,{c}\n" for i, c in enumerate(captions)))
    with pytest.raises(ValueError, match=r"1 missing, empty or non-string caption\(s\): row \d+: None"):
        load_caption_dataset(str(root), cache_dir=str(tmp_path / "cache"))


def test_save_to_disk_with_custom_columns(tmp_path):
    train = caption_table([f"caption {i}" for i in range(20)], "img", "text", note=["n"] * 20)
    val = caption_table(["held out"], "img", "text", note=["z"])
    datasets.DatasetDict({"train": train, "val": val}).save_to_disk(str(tmp_path / "saved"))

    dsd = load_caption_dataset(str(tmp_path / "saved"), image_column="img", caption_column="text", seed=2)
    assert sizes(dsd) == {"train": 18, "validation": 1, "test": 2}
    assert dsd["train"].column_names == ["image", "caption"]
    assert list(dsd["validation"]["caption"]) == ["held out"]
    carved = list(dsd["train"]["caption"]) + list(dsd["test"]["caption"])
    assert sorted(carved) == sorted(f"caption {i}" for i in range(20))
    again = load_caption_dataset(str(tmp_path / "saved"), image_column="img", caption_column="text", seed=2)
    assert list(again["test"]["caption"]) == list(dsd["test"]["caption"])

    with pytest.raises(ValueError, match=r"no column 'caption'; its columns are: img, text, note"):
        load_caption_dataset(str(tmp_path / "saved"), image_column="img")


def test_hub_id_goes_to_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, **kwargs):
        calls.append(name)
        return datasets.DatasetDict({"train": caption_table(["x"] * 10), "test": caption_table(["y"] * 2)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert sizes(load_caption_dataset("someone/captions")) == {"train": 9, "validation": 1, "test": 2}
    assert calls == ["someone/captions"]


def test_load_rejects_bad_arguments():
    with pytest.raises(ValueError, match="test_fraction"):
        load_caption_dataset("tuxpaint", test_fraction=0.0)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction"):
        load_caption_dataset("tuxpaint", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="limits keys"):
        load_caption_dataset("tuxpaint", limits={"eval": 3})
    with pytest.raises(ValueError, match=r"limits\['train'\]"):
        load_caption_dataset("tuxpaint", limits={"train": 0})


# --------------------------------------------------------------------------- validation


def test_validate_names_blank_and_missing_captions():
    ds = caption_table(["ok", None, "", "   ", "fine"])
    with pytest.raises(ValueError, match=r"split 'train': 3 missing, empty or non-string caption\(s\): "
                                         r"row 1: None, row 2: '', row 3: '   '$"):
        validate_caption_dataset(ds)
    many = datasets.DatasetDict({"train": caption_table(["ok"]), "validation": caption_table([""] * 7)})
    with pytest.raises(ValueError, match=r"split 'validation': 7 .* row 4: '' and 2 more"):
        validate_caption_dataset(many)


def test_validate_finds_undecodable_images_and_missing_columns():
    images = [{"bytes": png(Image.new("L", (4, 4))), "path": None}, {"bytes": b"garbage", "path": None}]
    broken = datasets.Dataset.from_dict(
        {"image": images, "caption": ["a", "b"]},
        features=datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")}),
    )
    with pytest.raises(ValueError, match=r"split 'train', row 1 \(in-memory bytes\): not a readable image"):
        validate_caption_dataset(broken)
    with pytest.raises(ValueError, match=r"has no column 'caption'; its columns are: image"):
        validate_caption_dataset(caption_table(["a"]).remove_columns("caption"))
    with pytest.raises(ValueError, match=r"split 'test' is empty"):
        validate_caption_dataset(datasets.DatasetDict(train=caption_table(["a"]), test=caption_table([])))


# ------------------------------------------------------------------------------- to_rgb


def test_to_rgb_converts_every_mode():
    rgb = Image.new("RGB", (3, 2), (10, 20, 30))
    assert to_rgb(rgb) is rgb
    see_through = Image.new("RGBA", (3, 2), (200, 0, 0, 0))
    see_through.putpixel((0, 0), (200, 0, 0, 255))
    palette = Image.new("P", (3, 2), 1)
    palette.putpalette([0, 0, 0, 9, 99, 199] + [0] * 762)
    keyed = palette.copy()
    keyed.info["transparency"] = 1
    cases = {
        "L": (Image.new("L", (3, 2), 77), (77, 77, 77)),
        "LA": (Image.new("LA", (3, 2), (77, 0)), (255, 255, 255)),
        "P": (palette, (9, 99, 199)),
        "P+transparency": (keyed, (255, 255, 255)),
        "RGBA": (see_through, (255, 255, 255)),
        "CMYK": (Image.new("CMYK", (3, 2), (0, 0, 0, 0)), (255, 255, 255)),
        "I;16": (Image.new("I;16", (3, 2), 257 * 100), (100, 100, 100)),
        "I": (Image.new("I", (3, 2), 65535), (255, 255, 255)),
        "F": (Image.new("F", (3, 2), 12.4), (12, 12, 12)),
        "1": (Image.new("1", (3, 2), 1), (255, 255, 255)),
    }
    for mode, (image, corner) in cases.items():
        out = to_rgb(image)
        assert out.mode == "RGB" and out.size == (3, 2), mode
        assert out.getpixel((2, 1)) == corner, mode
    assert to_rgb(see_through).getpixel((0, 0)) == (200, 0, 0)
