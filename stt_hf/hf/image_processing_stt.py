"""Preprocessing of STT models: timm's eval transform, as a transformers image processor.

A config's `data_config` holds timm's preprocessing keys (interpolation, crop_pct, crop_mode, mean, std);
the input size follows the config's img_size and in_chans. A saved checkpoint carries the processor as
a plain `BitImageProcessor` (preprocessor_config.json), so `AutoImageProcessor` and `pipeline` load it
without remote code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

if TYPE_CHECKING:
    from transformers import BitImageProcessor

RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}  # PIL's codes for timm's names


def complete_data_config(data: dict[str, Any], in_chans: int, small_input: bool) -> dict[str, Any]:
    """`data` with every key filled in, and mean and std with one value per input channel."""
    data = dict(data)
    for key, default in (("mean", IMAGENET_DEFAULT_MEAN), ("std", IMAGENET_DEFAULT_STD)):
        value = list(data.get(key) or default)
        if len(value) != in_chans:  # e.g. 1-channel input: the average of the RGB statistics
            value = [sum(value) / len(value)] * in_chans
        data[key] = value
    crop_pct = data.setdefault("crop_pct", 1.0 if small_input else 0.875)
    if not (isinstance(crop_pct, (int, float)) and 0 < crop_pct <= 1):
        raise ValueError(f"SttConfig.data_config['crop_pct'] must be in (0, 1], got {crop_pct!r}")
    data.setdefault("interpolation", "bilinear")
    data.setdefault("crop_mode", "center")
    return data


def image_processor(config) -> BitImageProcessor:
    """A transformers image processor doing timm's eval transform for the model of `config`.

    Resize the short side to size / crop_pct, center-crop to size, scale to [0, 1], normalize.
    Images are converted to RGB when the model takes 3 channels, so any PIL mode works.
    """
    # Imported here: transformers' image processors load tokenizers, which a config alone does not need.
    from transformers import BitImageProcessor

    _, height, width = config.input_size()
    data = config.data_config
    return BitImageProcessor(
        size={"shortest_edge": int(min(height, width) / data["crop_pct"])},
        crop_size={"height": height, "width": width},
        resample=RESAMPLE.get(data["interpolation"], RESAMPLE["bilinear"]),
        image_mean=list(data["mean"]), image_std=list(data["std"]),
        do_convert_rgb=config.in_chans == 3,
    )


__all__ = ["complete_data_config", "image_processor"]
