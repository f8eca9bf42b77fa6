"""In-memory training images and batch augmentation: the same crop/flip family as timm's transform."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from stt_hf.data import batch_augment
from stt_hf.data.batch_augment import BatchAugment, decode_split


def image_dataset(sizes, mode="L"):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).convert(mode) for w, h in sizes]
    return datasets.Dataset.from_dict({"image": images, "label": list(range(len(images)))},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "label": datasets.Value("int64")}))


def test_decode_keeps_pixels_and_labels():
    ds = image_dataset([(28, 28)] * 5)
    decoded = decode_split(ds, (3, 28, 28))
    assert decoded.images.shape == (5, 3, 28, 28) and decoded.images.dtype == torch.uint8
    expected = np.asarray(ds[3]["image"].convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(decoded[3]["pixel_values"].numpy(), expected) and decoded[3]["labels"] == 3


def test_decode_declines_what_per_image_transforms_must_do(monkeypatch):
    assert decode_split(image_dataset([(28, 28), (30, 28)]), (3, 28, 28)) is None  # needs a resize
    assert decode_split(image_dataset([(28, 28)] * 3), (3, 32, 32)) is None  # not at the input size
    monkeypatch.setattr(batch_augment, "MAX_IN_MEMORY_BYTES", 3 * 28 * 28 * 2)
    assert decode_split(image_dataset([(28, 28)] * 3), (3, 28, 28)) is None  # too big to hold


def test_identity_crop_and_flip_are_exact():
    x = torch.rand(4, 3, 28, 28)
    keep = BatchAugment((0.0,) * 3, (1.0,) * 3, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    flip = BatchAugment((0.0,) * 3, (1.0,) * 3, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0)
    torch.testing.assert_close(keep.augment(x), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(flip.augment(x), x.flip(-1), atol=1e-5, rtol=0)
    # As in timm, a whole-area crop with a jittered aspect ratio cannot fit: the whole image is used.
    whole = BatchAugment((0.0,) * 3, (1.0,) * 3, scale=(1.0, 1.0), hflip=0.0)
    torch.testing.assert_close(whole.augment(x), x, atol=1e-5, rtol=0)


def test_crops_zoom_in_by_the_sampled_area():
    # A centred bright square: a crop of area a shows it magnified about 1/a times, never shrunk.
    x = torch.zeros(256, 1, 28, 28)
    x[..., 12:16, 12:16] = 1.0
    aug = BatchAugment((0.0,), (1.0,), scale=(0.25, 0.25), ratio=(1.0, 1.0), hflip=0.0)
    torch.manual_seed(0)
    out = aug.augment(x)
    visible = out.flatten(1).sum(1)
    shown = visible[visible > 0]
    assert len(shown) > 30 and shown.mean() == pytest.approx(4 * x[0].sum().item(), rel=0.2)


def test_collator_normalizes_uint8_and_passes_float_through():
    aug = BatchAugment((0.5,) * 3, (0.25,) * 3, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0,
                       channels_last=True)
    raw = [{"pixel_values": torch.full((3, 8, 8), 255, dtype=torch.uint8), "labels": 1}] * 2
    batch = aug(raw)
    torch.testing.assert_close(batch["pixel_values"], torch.full((2, 3, 8, 8), 2.0))
    assert batch["pixel_values"].is_contiguous(memory_format=torch.channels_last)
    assert batch["labels"].tolist() == [1, 1]
    done = [{"pixel_values": torch.zeros(3, 8, 8), "labels": 0}]
    assert torch.equal(aug(done)["pixel_values"], torch.zeros(1, 3, 8, 8))  # evaluation batches
