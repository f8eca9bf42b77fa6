"""`fashion_scenes`: a built-in, deterministic scene dataset made of real Fashion-MNIST items.

Each scene is a square grayscale canvas (S x S, S = 64 by default; 128 and 224 work too) on which 1 to 4
Fashion-MNIST items are drawn, each scaled to a random side (S/4 to S/2 by default) and placed at random.
Any two items overlap by at most a tenth of the smaller one's box, their centres lie at least S/16 apart
horizontally, and the horizontal and vertical offsets of any two centres differ by at least S/16, so the
left-to-right order and every relation below are clear-cut in the picture.

Splits and sources: `train` scenes use only Fashion-MNIST train items; `validation` scenes use the first
half of its test items (file indices 0-4999) and `test` scenes the second half (5000-9999), so no item is
shared between splits. Scene i of a split depends only on (seed, split, i): a split of 40 scenes is the
first 40 scenes of the split of 20,000.

Columns:

- `image`: the scene, a `datasets.Image` (PNG, mode L): items are bright on black, as in Fashion-MNIST;
- `captions`: several references (list of str) in the grammar below, all true of the picture;
- `objects`: `class_id` (Fashion-MNIST class, 0-9), `box` ([x0, y0, x1, y1] in pixels, end exclusive:
  the tight box of the item's visible pixels, those of intensity >= `VISIBLE_LEVEL`) and `source_index`
  (the item's index in the Fashion-MNIST file of its split), one entry per item in reading order;
- `mask`: a `datasets.Image` (PNG, mode L) of per-pixel classes: 0 = background, 1..10 = class id + 1 of
  the item drawn on top there. A pixel is nonzero exactly where the image is >= `VISIBLE_LEVEL`.

Captions: several references per scene, in the grammar of `stt_hf.data.scene_captions`, which also
reads any caption back (the `object_f1` and `relation_accuracy` metrics score captions with it).

Python API::

    from stt_hf.data.scenes import load_fashion_scenes
    dsd = load_fashion_scenes(canvas=64, max_items=4, train_size=20_000, seed=0)

Generated once and cached with `save_to_disk` under `<datasets cache>/stt_hf/fashion_scenes/`
(`STT_HF_SCENES_CACHE` overrides the folder) in `v<GENERATOR_VERSION>-<hash of the options>`; a new
`GENERATOR_VERSION` generates afresh. Writing goes to a temporary folder renamed into place at the end,
so an interrupted generation never leaves a folder that a later call would read.
`python -m stt_hf.data.scenes --grid FILE.png` draws a picture grid of test scenes with their captions.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .classification import read_fashion_mnist
from .common import png_bytes
from .scene_captions import MAX_ITEMS, describe_scene, reading_order

GENERATOR_VERSION = 1
SCENES_CACHE_ENV = "STT_HF_SCENES_CACHE"
SPLITS = ("train", "validation", "test")
DEFAULT_SIZES = {"train": 20_000, "validation": 2_000, "test": 2_000}
ITEM_SIZE = 28  # side of a Fashion-MNIST image
MIN_ITEM_SIDE = 8
MAX_CANVAS = 1024
VISIBLE_LEVEL = 16  # an item's pixel is visible (box, mask) from this intensity up
MAX_OVERLAP = 0.1  # the boxes of two items share at most this fraction of the smaller box
PLACE_TRIES = 50  # random positions tried per item before the scene's items are drawn again
LAYOUT_TRIES = 200

# ------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SceneOptions:
    """Options of a scene set; `check()` raises a ValueError naming the option and what is allowed."""

    canvas: int = 64
    min_items: int = 1
    max_items: int = 4
    item_size: tuple[int, int] | None = None  # (smallest, largest) item side; default (S // 4, S // 2)
    train_size: int = DEFAULT_SIZES["train"]
    validation_size: int = DEFAULT_SIZES["validation"]
    test_size: int = DEFAULT_SIZES["test"]
    seed: int = 0

    @property
    def sides(self) -> tuple[int, int]:
        """(smallest, largest) item side in pixels."""
        return tuple(self.item_size) if self.item_size is not None else (self.canvas // 4, self.canvas // 2)

    @property
    def margin(self) -> int:
        """Least horizontal distance between centres, and least | |dx| - |dy| | between two centres."""
        return max(1, self.canvas // 16)

    def size(self, split: str) -> int:
        return getattr(self, f"{split}_size")

    def check(self) -> SceneOptions:
        _check_int("canvas", self.canvas, ITEM_SIZE, MAX_CANVAS,
                   f"from {ITEM_SIZE} (one Fashion-MNIST item) to {MAX_CANVAS} pixels")
        _check_int("max_items", self.max_items, 1, MAX_ITEMS, f"from 1 to {MAX_ITEMS}")
        _check_int("min_items", self.min_items, 1, self.max_items, f"from 1 to max_items={self.max_items}")
        for split in SPLITS:
            _check_int(f"{split}_size", self.size(split), 1, None, "a positive number of scenes")
        _check_int("seed", self.seed, 0, None, "a non-negative integer")
        self._check_item_size()
        return self

    def _check_item_size(self) -> None:
        sides = self.sides if isinstance(self.item_size, (tuple, list, type(None))) else ()
        if (len(sides) != 2 or not all(_is_int(s) for s in sides)
                or not MIN_ITEM_SIDE <= sides[0] <= sides[1] <= self.canvas):
            raise ValueError(
                f"item_size={self.item_size!r} with canvas={self.canvas}: item sides must be two integers "
                f"(smallest, largest) with {MIN_ITEM_SIDE} <= smallest <= largest <= canvas (no item "
                f"larger than the canvas)")
        smallest, margin = sides[0], self.margin
        # The items must fit: their smallest boxes fill at most a quarter of the canvas, and their centres,
        # `margin` apart horizontally, stay on it.
        fit = min(self.canvas ** 2 // (4 * smallest ** 2), (self.canvas - smallest) // margin + 1)
        if self.max_items > fit:
            raise ValueError(
                f"max_items={self.max_items} items do not fit a {self.canvas} px canvas with items of at "
                f"least {smallest} px: at most {fit} fit (a quarter of the canvas area, centres "
                f"{margin} px apart); lower max_items, enlarge the canvas or shrink item_size")

    def cache_name(self) -> str:
        """`v<GENERATOR_VERSION>-<12 hex digits of the options>`."""
        text = json.dumps(dict(asdict(self), item_size=list(self.sides)), sort_keys=True)
        return f"v{GENERATOR_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name: str, value, low: int, high: int | None, allowed: str) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):
        raise ValueError(f"{name}={value!r} is not allowed: {name} must be an integer {allowed}")


# --------------------------------------------------------------------------------- generation


def item_pools(arrays) -> dict[str, np.ndarray]:
    """{split: Fashion-MNIST file indices its scenes draw from}: train items for train, the two halves of
    the test items for validation and test."""
    half = len(arrays["test"][1]) // 2
    return {"train": np.arange(len(arrays["train"][1])), "validation": np.arange(half),
            "test": np.arange(half, len(arrays["test"][1]))}


def _source(split: str) -> str:
    return "train" if split == "train" else "test"


def _scaled_item(image: np.ndarray, side: int):
    """(item (side, side) uint8, tight box [x0, y0, x1, y1] of its visible pixels) or None if none is."""
    from PIL import Image

    item = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR))
    visible = item >= VISIBLE_LEVEL
    rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
    if rows.size == 0:
        return None
    return item, (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _compatible(box, other, margin: int) -> bool:
    """Bounded overlap, centres apart horizontally, and a clear relation between the two boxes."""
    overlap_w = min(box[2], other[2]) - max(box[0], other[0])
    overlap_h = min(box[3], other[3]) - max(box[1], other[1])
    smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
    if overlap_w > 0 and overlap_h > 0 and overlap_w * overlap_h > MAX_OVERLAP * smaller:
        return False
    dx = abs((other[0] + other[2]) - (box[0] + box[2]))  # doubled centre offsets
    dy = abs((other[1] + other[3]) - (box[1] + box[3]))
    return dx >= 2 * margin and abs(dx - dy) >= 2 * margin


def _layout(rng, tight_boxes, sides, options: SceneOptions):
    """Top-left corners (x, y) of the items' squares, or None when an item found no place."""
    corners, placed = [], []
    for (bx0, by0, bx1, by1), side in zip(tight_boxes, sides, strict=True):
        for _ in range(PLACE_TRIES):
            x, y = (int(v) for v in rng.integers(0, options.canvas - side + 1, size=2))
            box = (x + bx0, y + by0, x + bx1, y + by1)
            if all(_compatible(box, other, options.margin) for other in placed):
                corners.append((x, y))
                placed.append(box)
                break
        else:
            return None
    return corners, placed


def make_scene(rng, images: np.ndarray, labels: np.ndarray, pool: np.ndarray, options: SceneOptions) -> dict:
    """One scene: {image (S, S) uint8, mask (S, S) uint8, class_id, box, source_index} (reading order)."""
    count = int(rng.integers(options.min_items, options.max_items + 1))
    low, high = options.sides
    for _ in range(LAYOUT_TRIES):
        sources = pool[rng.integers(0, len(pool), size=count)]
        sides = [int(s) for s in rng.integers(low, high + 1, size=count)]
        items = [_scaled_item(images[i], s) for i, s in zip(sources, sides, strict=True)]
        if any(item is None for item in items):
            continue
        layout = _layout(rng, [box for _, box in items], sides, options)
        if layout is not None:
            break
    else:
        raise RuntimeError(f"no layout found for {count} items after {LAYOUT_TRIES} tries with {options}")
    corners, boxes = layout
    class_ids = [int(labels[i]) for i in sources]
    image, mask = _compose([item for item, _ in items], corners, class_ids, options)
    order = reading_order(class_ids, boxes)
    return dict(image=image, mask=mask, class_id=[class_ids[i] for i in order],
                box=[list(boxes[i]) for i in order], source_index=[int(sources[i]) for i in order])


def _compose(items, corners, class_ids, options: SceneOptions):
    """Draw the items in order: visible pixels cover what is below, faint ones only brighten it."""
    canvas = np.zeros((options.canvas, options.canvas), np.uint8)  # (S, S)
    mask = np.zeros_like(canvas)  # (S, S): 0 background, class id + 1
    for item, (x, y), class_id in zip(items, corners, class_ids, strict=True):
        side = item.shape[0]
        region, region_mask = canvas[y:y + side, x:x + side], mask[y:y + side, x:x + side]
        visible = item >= VISIBLE_LEVEL
        np.maximum(region, item, out=region)
        region[visible] = item[visible]
        region_mask[visible] = class_id + 1
    return canvas, mask


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of scene `index` of `split`: independent of every other scene."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def generate_split(split: str, size: int, options: SceneOptions, arrays=None, progress=None) -> dict:
    """Columns {image, captions, objects, mask} of scenes 0..size-1 of `split` (images as PNG bytes)."""
    arrays = arrays if arrays is not None else read_fashion_mnist()
    images, labels = arrays[_source(split)]
    pool = item_pools(arrays)[split]
    columns = {"image": [], "captions": [], "objects": [], "mask": []}
    for index in range(size):
        scene = make_scene(scene_rng(options.seed, split, index), images, labels, pool, options)
        columns["image"].append({"bytes": png_bytes(scene["image"]), "path": None})
        columns["mask"].append({"bytes": png_bytes(scene["mask"]), "path": None})
        columns["captions"].append(describe_scene(scene["class_id"], scene["box"]))
        columns["objects"].append({k: scene[k] for k in ("class_id", "box", "source_index")})
        if progress is not None:
            progress.update()
    return columns


def scene_features():
    """The `datasets.Features` of a split: image, captions, objects (class_id, box, source_index), mask."""
    import datasets

    ints = datasets.List(datasets.Value("int32"))
    return datasets.Features({
        "image": datasets.Image(),
        "captions": datasets.List(datasets.Value("string")),
        "objects": {"class_id": ints, "box": datasets.List(datasets.List(datasets.Value("int32"), length=4)),
                    "source_index": ints},
        "mask": datasets.Image(),
    })


def generate_fashion_scenes(options: SceneOptions, progress: bool = True):
    """The `DatasetDict` of `options` (checked first), generated in memory without the cache."""
    import datasets
    from tqdm.auto import tqdm

    options.check()
    arrays = read_fashion_mnist()
    total = sum(options.size(split) for split in SPLITS)
    with tqdm(total=total, desc="generating fashion_scenes", unit="scene", disable=not progress) as bar:
        splits = {split: datasets.Dataset.from_dict(generate_split(split, options.size(split), options,
                                                                   arrays, bar), features=scene_features())
                  for split in SPLITS}
    return datasets.DatasetDict(splits)


# ------------------------------------------------------------------------------------- cache


def scenes_cache_root() -> Path:
    """`STT_HF_SCENES_CACHE`, else `<datasets cache>/stt_hf/fashion_scenes`."""
    if os.environ.get(SCENES_CACHE_ENV):
        return Path(os.environ[SCENES_CACHE_ENV])
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "stt_hf" / "fashion_scenes"


def load_fashion_scenes(canvas: int = 64, *, min_items: int = 1, max_items: int = 4,
                        item_size: tuple[int, int] | None = None, train_size: int = DEFAULT_SIZES["train"],
                        validation_size: int = DEFAULT_SIZES["validation"],
                        test_size: int = DEFAULT_SIZES["test"], seed: int = 0,
                        cache_dir: str | os.PathLike | None = None, progress: bool = True):
    """The `fashion_scenes` `DatasetDict` (train, validation, test) of these options, from the cache or
    generated and cached. Options are checked before anything is read (ValueError naming the option).

    `cache_dir`: folder holding the cached versions (default `scenes_cache_root()`).
    """
    import datasets

    options = SceneOptions(canvas=canvas, min_items=min_items, max_items=max_items,
                           item_size=tuple(item_size) if isinstance(item_size, list) else item_size,
                           train_size=train_size, validation_size=validation_size, test_size=test_size,
                           seed=seed).check()
    path = Path(cache_dir if cache_dir is not None else scenes_cache_root()) / options.cache_name()
    if not (path / "dataset_dict.json").is_file():
        save_atomically(generate_fashion_scenes(options, progress), path)
    return datasets.load_from_disk(str(path))


def save_atomically(dsd, path: Path) -> None:
    """`dsd.save_to_disk` into a temporary folder beside `path`, renamed to `path` once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        dsd.save_to_disk(str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "dataset_dict.json").is_file():
                raise
            shutil.rmtree(tmp)  # another process finished the same scenes first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -------------------------------------------------------------------------------------- grid


def save_scene_grid(path: str | os.PathLike, *, count: int = 12, columns: int = 4, split: str = "test",
                    options: SceneOptions | None = None) -> Path:
    """A PNG grid of the first `count` scenes of `split`, each under its first two references."""
    import textwrap

    from PIL import Image

    from ..plotting import pyplot

    plt = pyplot()

    options = (options or SceneOptions()).check()
    data = generate_split(split, count, options)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, captions in zip(axes.flat, data["image"], data["captions"], strict=False):
        ax.imshow(Image.open(io.BytesIO(image["bytes"])), cmap="gray", vmin=0, vmax=255)
        text = "\n".join(textwrap.fill(c, 34) for c in captions[:2])
        ax.set_title(text, fontsize=8, loc="left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fashion_scenes: generate and cache, or draw a grid.")
    parser.add_argument("--grid", default=None, help="write a PNG grid of test scenes with captions here")
    parser.add_argument("--canvas", type=int, default=64)
    parser.add_argument("--max_items", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.grid:
        print(save_scene_grid(args.grid, options=SceneOptions(canvas=args.canvas, max_items=args.max_items,
                                                              seed=args.seed)))
    else:
        dsd = load_fashion_scenes(args.canvas, max_items=args.max_items, seed=args.seed)
        print(dsd)


if __name__ == "__main__":
    main()
