"""Datasets: the built-in offline ones, image folders and Hub ids, for each task.

`common` (what every image dataset shares, including the one RGB-conversion policy `to_rgb`),
`classification` (Fashion-MNIST, MNIST-5k, image folders), `captions` (Tux Paint, emoji, scenes),
`scenes` (the fashion_scenes generator), `segmentation` (image/mask pairs), `batch_augment` (in-memory
training images). Nothing here is imported by `import stt_hf`.
"""

from .classification import (
    BUILTIN_DATASETS,
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR_ENV,
    FASHION_MNIST_HUB_ID,
    load_image_dataset,
    read_fashion_mnist,
    read_idx,
    read_mnist_5k,
    validate_dataset,
)
from .common import check_image_splits, png_bytes, select_image_columns, to_channels, to_rgb

__all__ = ["BUILTIN_DATASETS", "DEFAULT_FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR_ENV",
           "FASHION_MNIST_HUB_ID", "check_image_splits", "load_image_dataset",
           "png_bytes", "read_fashion_mnist", "read_idx", "read_mnist_5k", "select_image_columns",
           "to_channels", "to_rgb", "validate_dataset"]
