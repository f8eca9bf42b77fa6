"""Training images held in memory and augmented a whole batch at a time.

Per-image PIL transforms cost about as much as the forward and backward pass of a small model on
28 px images, and they run between optimizer steps. When a training split is small enough and
already at the model's input size (Fashion-MNIST and MNIST are, at 28 px), it is decoded once into a
uint8 tensor and the same augmentation as timm's training transform (random-resized crop, horizontal
flip, normalization) is applied to each batch with one `grid_sample`.

Other datasets keep timm's per-image transforms (`stt_hf.tasks.common.build_transforms`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .common import open_image, to_channels, undecoded

MAX_IN_MEMORY_BYTES = 1 << 30  # decoded training images kept in memory at most (uint8)


class InMemoryImages(Dataset):
    """(N, C, H, W) uint8 images and their labels; items are {"pixel_values": uint8, "labels": int}."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], "labels": int(self.labels[i])}


def decode_split(ds, input_size: tuple[int, int, int]) -> InMemoryImages | None:
    """The split's images as one uint8 tensor, or None when they would not fit or are not all at
    `input_size` (C, H, W): then timm's per-image transform (which resizes) is the right tool."""
    channels, height, width = input_size
    if len(ds) * channels * height * width > MAX_IN_MEMORY_BYTES:
        return None
    if channels not in (1, 3):
        return None
    images = np.empty((len(ds), height, width, channels), dtype=np.uint8)  # (N, H, W, C)
    for i, value in enumerate(undecoded(ds)["image"]):
        image = open_image(value)
        if image.size != (width, height):
            return None
        images[i] = np.asarray(to_channels(image, channels)).reshape(height, width, channels)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, C, H, W), a view
    return InMemoryImages(pixels, torch.as_tensor(ds["label"]))


class BatchAugment:
    """Collator: uint8 images get a random-resized crop, a flip and normalization as a batch;
    float images (already transformed, e.g. the evaluation splits) are only stacked.

    The crop follows timm's `RandomResizedCropAndInterpolation`: area fraction in `scale`, aspect
    ratio log-uniform in `ratio`, position uniform, resized back with bilinear interpolation.
    """

    def __init__(self, mean, std, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5,
                 channels_last: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale, self.log_ratio, self.hflip = scale, (math.log(ratio[0]), math.log(ratio[1])), hflip
        self.channels_last = channels_last

    def __call__(self, examples: list[dict]) -> dict:
        pixels = torch.stack([e["pixel_values"] for e in examples])
        labels = torch.tensor([e["labels"] for e in examples])
        if pixels.dtype == torch.uint8:
            pixels = (self.augment(pixels.float().div_(255)) - self.mean) / self.std
            if self.channels_last:
                pixels = pixels.contiguous(memory_format=torch.channels_last)
        return {"pixel_values": pixels, "labels": labels}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> the same shape, each image cropped, resized and maybe flipped."""
        b = x.shape[0]
        # Crop width and height as fractions of the image. Like timm, a crop that does not fit is
        # drawn again, up to 10 times, and then the whole image is used.
        w, h = torch.ones(b), torch.ones(b)
        todo = torch.ones(b, dtype=torch.bool)
        for _ in range(10):
            area = torch.empty(b).uniform_(*self.scale)
            ratio = torch.empty(b).uniform_(*self.log_ratio).exp()
            w_new, h_new = (area * ratio).sqrt(), (area / ratio).sqrt()
            fits = todo & (w_new <= 1) & (h_new <= 1)
            w, h = torch.where(fits, w_new, w), torch.where(fits, h_new, h)
            todo &= ~fits
        # A centre that keeps the crop inside: affine_grid's coordinates run from -1 to 1.
        cx = (torch.rand(b) * 2 - 1) * (1 - w)
        cy = (torch.rand(b) * 2 - 1) * (1 - h)
        flip = torch.where(torch.rand(b) < self.hflip, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
