"""What every image dataset of the package shares: the one image-conversion policy, PNG encoding,
local and Hub sources, split carving and the checks before training.

`to_rgb` is the conversion every loader, transform and pipeline of the package applies to a PIL image
(transparency composited on white, 16-bit and float grayscale scaled to 8 bits); `to_channels` gives
a 1-channel model the grayscale of that RGB image.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

VALIDATION_ALIASES = ("validation", "valid", "val", "dev")
# Files an image folder may hold besides images.
IMAGEFOLDER_EXTRA_FILES = {"metadata.csv", "metadata.jsonl", "metadata.parquet", "readme.md"}
MAX_REPORTED = 5  # rows, files or values named in an error message


def first_rows(items: list[str]) -> str:
    """The first MAX_REPORTED of `items` (rows at fault), and how many more there are: what an error names."""
    more = f" and {len(items) - MAX_REPORTED} more" if len(items) > MAX_REPORTED else ""
    return ", ".join(items[:MAX_REPORTED]) + more


def to_rgb(image):
    """Return a PIL image as RGB (the same object when it already is): transparency is composited on
    white, and 16-bit, 32-bit and float grayscale is scaled to 8 bits."""
    from PIL import Image

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.float64)
        # 16-bit PNGs open as I;16 or I; a plain convert("L") would clip everything above 255 to white.
        if image.mode.startswith("I;16") or array.max() > 255:
            array = array / 257
        image = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def to_channels(image, channels: int = 3):
    """A PIL image in the mode a model of `channels` input channels takes: `to_rgb(image)` for 3, its
    8-bit grayscale (mode L) for 1. Raises ValueError for other channel counts."""
    if channels == 3:
        return to_rgb(image)
    if channels == 1:
        return image if image.mode == "L" else to_rgb(image).convert("L")
    raise ValueError(f"images convert to 1 (grayscale) or 3 (RGB) channels, not {channels}")


def open_image(value):
    """A PIL image from what a `datasets.Image(decode=False)` column holds ({"bytes", "path"}), loaded
    now, so a corrupt file fails here with its name rather than deep inside a batch; a PIL image passes
    through."""
    from PIL import Image

    if not isinstance(value, dict):
        return value
    where = value.get("path") or "an in-memory image"
    try:
        image = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
        image.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise ValueError(f"{where}: not a readable image ({e}); replace or remove the file") from None
    return image


def undecoded(ds, column: str = "image"):
    """`ds` with its image column left as file bytes and paths, for `open_image` to decode (and name)."""
    import datasets

    if isinstance(ds.features.get(column), datasets.Image) and ds.features[column].decode:
        return ds.cast_column(column, datasets.Image(decode=False))
    return ds


def png_bytes(array: np.ndarray) -> bytes:
    """PNG bytes (fast compression) of a uint8 array: (H, W) grayscale or (H, W, 3) RGB."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def load_hub(dataset_id: str, cache_dir):
    import datasets

    if dataset_id.startswith(("/", ".", "~")) or dataset_id.count("/") > 1:  # a path, not an ORG/NAME id
        raise FileNotFoundError(f"--dataset {dataset_id}: no such folder (a Hub dataset id has the form "
                                "ORG/NAME)")

    return datasets.load_dataset(dataset_id, cache_dir=cache_dir)


def load_folder_or_hub(name: str, cache_dir):
    """`load_local_dir` for a folder, else `load_hub`."""
    return load_local_dir(name, cache_dir) if Path(name).is_dir() else load_hub(name, cache_dir)


def load_local_dir(path: str, cache_dir):
    """A `save_to_disk` directory, else an image folder (non-image files raise a ValueError)."""
    import datasets

    root = Path(path)
    if (root / "dataset_dict.json").is_file() or (root / "dataset_info.json").is_file():
        dsd = datasets.load_from_disk(str(root))
        return dsd if isinstance(dsd, datasets.DatasetDict) else datasets.DatasetDict({"train": dsd})
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    extensions = {e.lower() for e in ImageFolder.EXTENSIONS}
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and not _is_hidden(p.relative_to(root))]
    allowed = IMAGEFOLDER_EXTRA_FILES
    others = [p for p in files if p.suffix.lower() not in extensions and p.name.lower() not in allowed]
    if others:
        shown = ", ".join(str(p.relative_to(root)) for p in others[:MAX_REPORTED])
        more = f" and {len(others) - MAX_REPORTED} more" if len(others) > MAX_REPORTED else ""
        raise ValueError(
            f"image folder {root} holds {len(others)} non-image file(s): {shown}{more}. "
            f"Remove them, or move them out of the folder."
        )
    if not any(p.suffix.lower() in extensions for p in files):
        raise ValueError(f"image folder {root} holds no image files")
    return datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=cache_dir)


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def select_image_columns(dsd, image_column: str, other_column: str, other_name: str):
    """DatasetDict of only `image_column` and `other_column`, renamed `image` and `other_name`; a
    single Dataset becomes the train split, and file-path images become an Image feature."""
    import datasets

    if isinstance(dsd, datasets.Dataset):
        dsd = datasets.DatasetDict({"train": dsd})
    out = {}
    for split, ds in dsd.items():
        check_columns(ds, split, image_column, other_column)
        for source, target in ((image_column, "image"), (other_column, other_name)):
            if source != target:
                if target in ds.column_names:
                    ds = ds.remove_columns(target)
                ds = ds.rename_column(source, target)
        ds = ds.select_columns(["image", other_name])
        image = ds.features["image"]
        if isinstance(image, datasets.Value) and image.dtype in ("string", "large_string"):
            ds = ds.cast_column("image", datasets.Image())  # file paths
        out[split] = ds
    return datasets.DatasetDict(out)


def check_columns(ds, split: str, *columns: str) -> None:
    for column in columns:
        if column not in ds.column_names:
            raise ValueError(
                f"split {split!r} has no column {column!r}; its columns are: {', '.join(ds.column_names)}"
            )


def check_image_splits(dsd, target: str):
    """The checks every image dataset gets before training; returns `dsd` as a DatasetDict.

    There must be at least one split, no split may be empty, each must have the `image` and `target`
    columns (the existing ones are listed when one is missing), and `image` must be a `datasets.Image`.
    """
    import datasets

    if isinstance(dsd, datasets.Dataset):
        dsd = datasets.DatasetDict({"train": dsd})
    if len(dsd) == 0:
        raise ValueError("the dataset has no splits")
    for split, ds in dsd.items():
        if len(ds) == 0:
            raise ValueError(f"split {split!r} is empty (0 rows)")
        check_columns(ds, split, "image", target)
        if not isinstance(ds.features["image"], datasets.Image):
            raise ValueError(
                f"split {split!r}: column 'image' must be a datasets.Image feature, "
                f"got {ds.features['image']!r}"
            )
    return dsd


def check_images_decode(ds, split: str, sample: int) -> None:
    """Decode the first, last and evenly spaced rows of `ds`; raise naming the row and file on failure."""
    import datasets
    from PIL import Image

    rows = np.unique(np.linspace(0, len(ds) - 1, num=min(sample, len(ds))).astype(int))
    for row in rows.tolist():
        try:
            image = ds[row]["image"]
            if not isinstance(image, Image.Image):
                raise TypeError(f"decoded to {type(image).__name__}")
            image.load()
        except Exception as e:
            source = ds.cast_column("image", datasets.Image(decode=False))[row]["image"]
            where = (source or {}).get("path") or "in-memory bytes"
            raise ValueError(f"split {split!r}, row {row} ({where}): not a readable image: {e}") from e


def carve_indices(num_rows: int, val_fraction: float, seed: int):
    """Seeded split of range(num_rows) into sorted (train, validation) index arrays."""
    num_val = max(1, int(round(num_rows * val_fraction)))
    if num_rows - num_val < 1:
        raise ValueError(f"cannot carve a validation split from a train split of {num_rows} row(s)")
    order = np.random.default_rng(seed).permutation(num_rows)
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def subset_indices(num_rows: int, limit: int | None, seed: int) -> np.ndarray:
    """All rows, or a seeded random subset of `limit` rows kept in their original order."""
    if limit is None or limit >= num_rows:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(seed).permutation(num_rows)[:limit])


def finalize_splits(dsd, val_fraction, seed, limits):
    """Return train/validation[/test]: rename validation aliases, carve validation if absent, subset."""
    import datasets

    splits = dict(dsd)
    if "train" not in splits:
        raise ValueError(f"the dataset has no 'train' split; its splits are: {', '.join(splits)}")
    for alias in VALIDATION_ALIASES:
        if alias in splits:
            splits["validation"] = splits.pop(alias)
            break
    if "validation" not in splits:
        train, val = carve_indices(len(splits["train"]), val_fraction, seed)
        splits["validation"] = splits["train"].select(val)
        splits["train"] = splits["train"].select(train)
    out = {}
    for split in ("train", "validation", "test"):
        if split in splits:
            ds = splits[split]
            keep = subset_indices(len(ds), limits.get(split), seed)
            out[split] = ds if len(keep) == len(ds) else ds.select(keep)
    return datasets.DatasetDict(out)


__all__ = ["IMAGEFOLDER_EXTRA_FILES", "MAX_REPORTED", "VALIDATION_ALIASES", "carve_indices", "check_columns",
           "check_image_splits", "check_images_decode", "finalize_splits", "first_rows",
           "load_folder_or_hub", "load_hub", "load_local_dir",
           "open_image", "png_bytes", "select_image_columns", "subset_indices", "to_channels", "to_rgb",
           "undecoded"]
