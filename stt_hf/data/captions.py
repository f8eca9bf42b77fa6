"""Image-captioning datasets as `datasets.DatasetDict` with an `image` and a `caption` column.

`load_caption_dataset` returns the splits `train`, `validation` and `test`; `image` is a `datasets.Image`
feature (decodes to PIL) and `caption` a string. Sources:

- `tuxpaint`: the stamps of the Debian package `tuxpaint-stamps-default`, each a PNG with a human-written
  English description (first line of the sibling `.txt`), composited on white and stored as RGB at their
  native size (directory overridable with `STT_HF_TUXPAINT_DIR`). `drop_symbols` leaves out the
  `symbols/` stamps (letters, digits, coins, chess pieces: "The letter T."), about a third of them;
- `emoji`: the single-codepoint emoji of the Debian package `fonts-noto-color-emoji`, rendered on white at
  72x72 pixels and captioned with their lowercase Unicode name ("grinning face");
- `fashion_scenes`: the scenes of `stt_hf.data.scenes` (default options, seed 0, whatever the `seed`
  here), with `caption` its first reference and the columns `captions` (all references) and `objects`
  kept for the scene metrics; `limits` generate only the first scenes of each split (independent
  draws, so a random subset, and the first rows of the full split);
- a local directory: a `save_to_disk` dataset, or an image folder with a `metadata.csv` that has a
  `file_name` column and the caption column;
- anything else: a Hub dataset id, loaded with `datasets.load_dataset(name_or_path)`.

Images of the last two sources are kept as stored; `to_rgb` (from `common`, the package's one conversion
policy) converts any PIL mode to RGB.
`validate_caption_dataset` checks a `DatasetDict` before training and raises a `ValueError` naming the rows.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np

from .common import (
    carve_indices,
    check_image_splits,
    check_images_decode,
    finalize_splits,
    first_rows,
    load_folder_or_hub,
    png_bytes,
    select_image_columns,
    to_rgb,
)

BUILTIN_CAPTION_DATASETS = ("tuxpaint", "emoji", "fashion_scenes")
SPLITS = ("train", "validation", "test")
DEFAULT_TUXPAINT_DIR = "/usr/share/tuxpaint/stamps"
TUXPAINT_DIR_ENV = "STT_HF_TUXPAINT_DIR"
DEFAULT_EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_FONT_ENV = "STT_HF_EMOJI_FONT"
EMOJI_SIZE = 72
# Miscellaneous Technical, Miscellaneous Symbols, Dingbats and the emoji blocks of plane 1.
EMOJI_RANGES = (
    (0x2300, 0x23FF), (0x2600, 0x26FF), (0x2700, 0x27BF), (0x1F300, 0x1F5FF),
    (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF),
)


def load_caption_dataset(
    source: str = "tuxpaint",
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    limits: dict[str, int | None] | None = None,
    drop_symbols: bool = True,
    cache_dir: str | None = None,
):
    """Load an image-captioning dataset as a validated `DatasetDict` (train, validation, test).

    Args:
        source: `tuxpaint`, `emoji`, `fashion_scenes`, a local directory or a Hub dataset id (the built-in
            names win: write `./emoji` for a local directory of that name).
        image_column, caption_column: source column names, renamed to `image` and `caption`.
        seed: seed of the split carving and of the `limits` subsets (both deterministic).
        val_fraction, test_fraction: shares of the source's `train` carved out as `validation` and `test`
            when the source has no such split.
        limits: {split: at most this many rows (a seeded random subset), or None for all}.
        drop_symbols: `tuxpaint` only: leave out the letter, digit and symbol stamps.
        cache_dir: `datasets` cache directory for `load_dataset` (image folders and Hub ids).
    """
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{key} must be in (0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    limits = dict(limits or {})
    for split, value in limits.items():
        if split not in SPLITS:
            raise ValueError(f"limits keys must be among {', '.join(SPLITS)}, got {split!r}")
        if value is not None and value < 1:
            raise ValueError(f"limits[{split!r}] must be a positive integer or None, got {value}")

    name = str(source)
    if name.lower() == "fashion_scenes":
        dsd = _fashion_scene_splits(limits)
    elif name.lower() in BUILTIN_CAPTION_DATASETS:
        name = name.lower()
        keys, captions, render = _tuxpaint_rows(drop_symbols) if name == "tuxpaint" else _emoji_rows()
        dsd = _make_splits({"train": _table(key=keys, caption=captions)}, val_fraction, test_fraction,
                           seed, limits)
        # Images are rendered only for the rows kept, so `limits` also saves the rendering time.
        dsd = _render_splits(dsd, render, keep_path=name == "tuxpaint")
    else:
        dsd = load_folder_or_hub(name, cache_dir)
        dsd = select_image_columns(dsd, image_column, caption_column, "caption")
        dsd = _make_splits(dsd, val_fraction, test_fraction, seed, limits)
    validate_caption_dataset(dsd)
    return dsd


def validate_caption_dataset(dsd, *, decode_sample: int = 16) -> None:
    """Check `dsd` before training; raise a `ValueError` that names the split and rows at fault.

    Checks every split for: rows (an empty split is named), the `image` and `caption` columns (the
    existing columns are listed when one is missing), an `image` column that is a `datasets.Image` feature
    whose first, last and evenly spaced rows (`decode_sample` per split) decode to images, and captions
    that are non-blank strings (the first offending rows are listed).
    """
    for split, ds in check_image_splits(dsd, "caption").items():
        captions = list(ds["caption"])
        bad = [i for i, c in enumerate(captions) if not isinstance(c, str) or not c.strip()]
        if bad:
            raise ValueError(f"split {split!r}: {len(bad)} missing, empty or non-string caption(s): "
                             + first_rows([f"row {i}: {captions[i]!r}" for i in bad]))
        check_images_decode(ds, split, decode_sample)


# ---------------------------------------------------------------------------- built-in sources


def _tuxpaint_rows(drop_symbols: bool):
    """(stamp paths relative to the root, captions, render) for the PNG stamps that have a description."""
    from PIL import Image

    root = Path(os.environ.get(TUXPAINT_DIR_ENV) or DEFAULT_TUXPAINT_DIR)
    pngs = sorted(root.rglob("*.png")) if root.is_dir() else []
    if not pngs:
        raise FileNotFoundError(
            f"no Tux Paint stamps (*.png) found in {root}. Install the Debian package "
            f"tuxpaint-stamps-default (apt-get install tuxpaint-stamps-default) or point "
            f"{TUXPAINT_DIR_ENV} at a directory holding the stamps."
        )
    keys, captions = [], []
    for png in pngs:
        relative = png.relative_to(root)
        description = png.with_suffix(".txt")
        # `*_mirror.png` stamps have no .txt of their own: they are mirrored duplicates, skipped.
        # SVG-only stamps are skipped too: rendering SVG would need another dependency.
        if (drop_symbols and relative.parts[0] == "symbols") or not description.is_file():
            continue
        # The first line is English; the next ones are translations (`fr.utf8=...`).
        caption = description.read_text(encoding="utf-8-sig").partition("\n")[0].strip()
        if caption:
            keys.append(relative.as_posix())
            captions.append(caption)
    return keys, captions, lambda key: to_rgb(Image.open(root / key))


def _emoji_rows():
    """(emoji characters, their lowercase Unicode names, render) for the glyphs the font draws."""
    from PIL import Image, ImageDraw, ImageFont

    path = os.environ.get(EMOJI_FONT_ENV) or DEFAULT_EMOJI_FONT
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"emoji font {path} not found. Install the Debian package fonts-noto-color-emoji "
            f"(apt-get install fonts-noto-color-emoji) or point {EMOJI_FONT_ENV} at NotoColorEmoji.ttf."
        )
    # A bitmap (CBDT) font: 109 px is its only size. The basic layout needs no shaping library.
    font = ImageFont.truetype(path, 109, layout_engine=ImageFont.Layout.BASIC)
    chars = []
    for first, last in EMOJI_RANGES:
        for char in map(chr, range(first, last + 1)):
            # Unnamed: newer than this Python's Unicode tables. Sk: skin-tone swatches, not pictures.
            if unicodedata.name(char, None) and unicodedata.category(char) != "Sk":
                if font.getmask(char).getbbox() is not None:  # None: no glyph in the font, renders blank
                    chars.append(char)

    def render(char):
        left, top, right, bottom = font.getbbox(char)
        side = max(right - left, bottom - top)
        canvas = Image.new("RGBA", (side, side), (255, 255, 255, 0))
        ImageDraw.Draw(canvas).text((side / 2, side / 2), char, font=font, embedded_color=True, anchor="mm")
        return to_rgb(canvas).resize((EMOJI_SIZE, EMOJI_SIZE), Image.Resampling.LANCZOS)

    return chars, [unicodedata.name(c).lower() for c in chars], render


def _fashion_scene_splits(limits):
    """The default `fashion_scenes` (first `limits[split]` scenes) with `caption`, its first reference."""
    import datasets

    from .scenes import DEFAULT_SIZES, load_fashion_scenes

    sizes = {split: min(limits.get(split) or size, size) for split, size in DEFAULT_SIZES.items()}
    if sizes == DEFAULT_SIZES or all(n < DEFAULT_SIZES[split] for split, n in sizes.items()):
        dsd = load_fashion_scenes(**{f"{split}_size": n for split, n in sizes.items()})
    else:  # some split whole: the default cache, cut (scene i is the same whatever the split's size)
        dsd = load_fashion_scenes()
        dsd = datasets.DatasetDict({split: ds.select(range(sizes[split])) for split, ds in dsd.items()})
    return datasets.DatasetDict({
        split: ds.remove_columns("mask").add_column("caption", [refs[0] for refs in ds["captions"]])
        for split, ds in dsd.items()})


def _table(**columns):
    import datasets

    return datasets.Dataset.from_dict(columns)


def _render_splits(dsd, render, keep_path: bool):
    """Replace each split's `key` column by the PNG-encoded image `render(key)`."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    out = {}
    for split, ds in dsd.items():
        images = [
            {"bytes": png_bytes(np.asarray(render(key))), "path": key if keep_path else None}
            for key in ds["key"]
        ]
        rows = {"image": images, "caption": list(ds["caption"])}
        out[split] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(out)


# ------------------------------------------------------------------------ generic sources


def _make_splits(dsd, val_fraction, test_fraction, seed, limits):
    """Return train/validation/test: carve the missing ones out of `train` (seeded), then subset."""
    import datasets

    splits = dict(dsd)
    if "test" not in splits and "train" in splits:
        train, test = carve_indices(len(splits["train"]), test_fraction, seed)
        splits["train"], splits["test"] = splits["train"].select(train), splits["train"].select(test)
        # Both fractions are shares of the source's train split, not of what is left after the test carve.
        val_fraction = val_fraction / (1.0 - test_fraction)
    return finalize_splits(datasets.DatasetDict(splits), val_fraction, seed, limits)
