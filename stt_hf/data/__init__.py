"""Datasets: the built-in offline ones, image folders and Hub ids, for each task.

`classification` (Fashion-MNIST, MNIST-5k, image folders), `captions` (Tux Paint, emoji, scenes),
`scenes` (the fashion_scenes generator), `segmentation` (image/mask pairs), `batch_augment` (in-memory
training images). Nothing here is imported by `import stt_hf`.
"""

from .classification import (
    BUILTIN_DATASETS,
    FASHION_MNIST_CLASSES,
    check_image_splits,
    load_image_dataset,
    png_bytes,
    read_fashion_mnist,
    read_idx,
    select_image_columns,
    validate_dataset,
)

__all__ = ["BUILTIN_DATASETS", "FASHION_MNIST_CLASSES", "check_image_splits", "load_image_dataset",
           "png_bytes", "read_fashion_mnist", "read_idx", "select_image_columns", "validate_dataset"]
