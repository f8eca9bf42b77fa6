"""Semantic segmentation data: image + mask pairs, checked and decoded into memory.

Sources (`load_segmentation_dataset`):

- `fashion_scenes` (default): the scenes of `stt_hf.data.scenes` with their per-pixel masks; classes
  "background" (0) and the ten Fashion-MNIST classes (class id + 1);
- a local folder of pairs: `images/` and `masks/` holding files of the same stem (`scene1.png` and
  `scene1.png`), either at the top or in `train/`, `validation/`, `test/` subfolders; an optional
  `classes.txt` names the classes, one per line, line i for mask value i;
- a `save_to_disk` folder, or a Hub dataset id, with an image and a mask column.

A mask is a single-channel image (PIL mode L, P or I) of the image's size whose values are class ids,
or 255 for pixels that are not scored (`IGNORE_INDEX`). `decode_segmentation` decodes every split and
rejects, before any training, masks of the wrong size or mode and labels out of range, naming the rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..hf.modeling_stt_seg import IGNORE_INDEX
from .common import MAX_REPORTED, to_rgb

SCENE_CLASSES = ("background", "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
MASK_MODES = ("L", "P", "I", "I;16", "1")


def load_segmentation_dataset(source: str = "fashion_scenes", *, image_column: str = "image",
                              mask_column: str = "mask", val_fraction: float = 0.1, seed: int = 42,
                              scene_sizes: dict | None = None, scene_canvas: int = 64,
                              max_train_samples: int | None = None, max_eval_samples: int | None = None):
    """(DatasetDict with `image` and `mask` columns and a `train` and `validation` split, class names or
    None when the source does not name them).

    scene_sizes: scenes per split of `fashion_scenes` ({"train": n, "validation": n, "test": n}).
    """
    import datasets

    names = None
    if source == "fashion_scenes":
        from .scenes import load_fashion_scenes

        sizes = {f"{split}_size": n for split, n in (scene_sizes or {}).items() if n}
        dsd = load_fashion_scenes(canvas=scene_canvas, **sizes)
        names = list(SCENE_CLASSES)
    elif Path(source).is_dir():
        dsd, names = _load_local(Path(source), image_column, mask_column)
    elif source.startswith(("/", ".", "~")) or source.count("/") > 1:
        raise FileNotFoundError(f"--dataset {source}: no such folder (a Hub dataset id has the form "
                                "ORG/NAME)")
    else:
        dsd = datasets.load_dataset(source)
    dsd = datasets.DatasetDict(dsd)
    for split, ds in dsd.items():
        missing = [c for c in (image_column, mask_column) if c not in ds.column_names]
        if missing:
            raise ValueError(f"split {split!r} of {source} has no column {', '.join(map(repr, missing))} "
                             f"(columns: {ds.column_names}); name them with --image_column / --mask_column")
    dsd = datasets.DatasetDict({
        split: ds.select_columns([image_column, mask_column]).rename_columns(
            {c: n for c, n in ((image_column, "image"), (mask_column, "mask")) if c != n})
        for split, ds in dsd.items()})
    if "train" not in dsd:
        raise ValueError(f"{source} has no train split (splits: {sorted(dsd)})")
    for alias in ("valid", "val", "dev"):
        if "validation" not in dsd and alias in dsd:
            dsd["validation"] = dsd.pop(alias)
    if "validation" not in dsd:
        parts = dsd["train"].train_test_split(test_size=val_fraction, seed=seed)
        dsd["train"], dsd["validation"] = parts["train"], parts["test"]
    for split, limit in (("train", max_train_samples), ("validation", max_eval_samples),
                         ("test", max_eval_samples)):
        if limit and split in dsd and len(dsd[split]) > limit:
            dsd[split] = dsd[split].select(range(limit))
    return dsd, names


def _load_local(folder: Path, image_column: str, mask_column: str):
    import datasets

    names_file = folder / "classes.txt"
    names = ([line.strip() for line in names_file.read_text().splitlines() if line.strip()]
             if names_file.is_file() else None)
    if (folder / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(folder)), names
    roots = {split: folder / split for split in ("train", "validation", "test") if (folder / split).is_dir()}
    if not roots:
        roots = {"train": folder}
    dsd = {}
    for split, root in roots.items():
        images, masks = root / "images", root / "masks"
        if not images.is_dir() or not masks.is_dir():
            raise FileNotFoundError(f"{root} needs an images/ and a masks/ folder of files with matching "
                                    "names")
        image_files = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        mask_files = {p.stem: p for p in sorted(masks.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        unpaired = sorted(set(image_files) ^ set(mask_files))
        if unpaired:
            raise ValueError(f"{root}: {len(unpaired)} files without a partner in images/ or masks/: "
                             f"{', '.join(unpaired[:MAX_REPORTED])}")
        if not image_files:
            raise ValueError(f"{images} holds no images")
        stems = sorted(image_files)
        features = datasets.Features({image_column: datasets.Image(), mask_column: datasets.Image()})
        dsd[split] = datasets.Dataset.from_dict(
            {image_column: [str(image_files[s]) for s in stems],
             mask_column: [str(mask_files[s]) for s in stems]},
            features=features)
    return datasets.DatasetDict(dsd), names


@dataclass
class SegmentationArrays:
    """One decoded split: images uint8 (N, 3, S, S) RGB and masks uint8 (N, S, S)."""

    images: torch.Tensor
    masks: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


class SegmentationDataset(torch.utils.data.Dataset):
    """A decoded split as Trainer examples {pixel_values: uint8 (3, S, S), labels: uint8 (S, S)}; image and
    mask are flipped left-right together with probability `hflip` (training augmentation)."""

    def __init__(self, arrays: SegmentationArrays, hflip: float = 0.0):
        self.arrays, self.hflip = arrays, hflip

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> dict:
        image, mask = self.arrays.images[index], self.arrays.masks[index]
        if self.hflip > 0 and torch.rand(()) < self.hflip:
            image, mask = image.flip(-1), mask.flip(-1)
        return {"pixel_values": image, "labels": mask}


class SegmentationCollator:
    """Stacks uint8 examples into the model's batch: images scaled to [0, 1] and normalized, labels int64."""

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, examples: list[dict]) -> dict:
        images = torch.stack([e["pixel_values"] for e in examples])
        return {"pixel_values": normalize(images, self.mean, self.std),
                "labels": torch.stack([e["labels"] for e in examples]).long()}


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> the model's float input."""
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def _decode_row(image, mask, size: int):
    """(image uint8 (3, S, S), mask array (S, S) of int64) or a problem string."""
    from PIL import Image

    if mask.mode not in MASK_MODES:
        return f"mask is mode {mask.mode}, not a single-channel label image (mode L, P or I)"
    if mask.size != image.size:
        return f"mask is {mask.size[0]}x{mask.size[1]} but its image is {image.size[0]}x{image.size[1]}"
    image = to_rgb(image)
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
        mask = mask.resize((size, size), Image.NEAREST)
    return np.asarray(image).transpose(2, 0, 1), np.asarray(mask).astype(np.int64)


def decode_segmentation(dsd, img_size: int, num_labels: int | None = None):
    """({split: SegmentationArrays}, num_labels): every image and mask decoded at img_size x img_size.

    Raises ValueError, naming up to five rows per kind of problem, for masks that are not single-channel,
    not of their image's size, or hold values outside [0, num_labels) other than 255. With num_labels
    None, it is one more than the largest label found.
    """
    problems: list[str] = []
    decoded = {}
    largest = -1
    for split, ds in dsd.items():
        images, masks = [], []
        for index, row in enumerate(ds):
            result = _decode_row(row["image"], row["mask"], img_size)
            if isinstance(result, str):
                problems.append(f"{split} row {index}: {result}")
                continue
            image, mask = result
            labels = np.unique(mask)
            limit = num_labels if num_labels is not None else IGNORE_INDEX
            bad = labels[(labels != IGNORE_INDEX) & ((labels < 0) | (labels >= limit))]
            if bad.size:
                allowed = f"0..{num_labels - 1}" if num_labels is not None else "0..254"
                problems.append(f"{split} row {index}: mask labels {bad.tolist()[:10]} are outside "
                                f"{allowed} ({IGNORE_INDEX} = not scored)")
                continue
            kept = labels[labels != IGNORE_INDEX]
            largest = max(largest, int(kept.max()) if kept.size else -1)
            images.append(image)
            masks.append(mask.astype(np.uint8))
        if not len(ds):
            problems.append(f"split {split!r} is empty")
        elif not problems:
            decoded[split] = SegmentationArrays(torch.from_numpy(np.stack(images)),
                                                torch.from_numpy(np.stack(masks)))
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise ValueError(f"{len(problems)} bad masks (nothing was trained):\n  {shown}{more}")
    return decoded, num_labels if num_labels is not None else largest + 1


def class_names(names: list[str] | None, num_labels: int) -> list[str]:
    """The names given, or class_0 .. class_{n-1}."""
    return list(names) if names else [f"class_{i}" for i in range(num_labels)]


def parse_class_names(text: str | None) -> list[str] | None:
    """`--class_names`: comma-separated names, or a file of one name per line."""
    if not text:
        return None
    if os.path.isfile(text):
        return [line.strip() for line in Path(text).read_text().splitlines() if line.strip()]
    return [name.strip() for name in text.split(",") if name.strip()]
