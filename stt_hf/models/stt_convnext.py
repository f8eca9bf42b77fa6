"""STT ConvNeXts: timm's ConvNeXt with STT added after chosen stages (`plugin.add_attention`).

The trunk is timm's own `ConvNeXt`, built by its registered name, so its weights and every timm API
carry over; ConvNeXt blocks have no attention slot, so STT sits after stages. The pretrained configs
point at the plain ConvNeXt's ImageNet weights, and STT starts as the identity.

`stt_convnext_s` is for 28-32 px images, like the `_s` ResNets: a 1x1 patch stem (total stride 8),
narrow (32-256 channels), two blocks per stage, and one STT module after the last stage.
"""

from __future__ import annotations

from timm.models import generate_default_cfgs, get_pretrained_cfg, is_model, register_model
from timm.models.convnext import checkpoint_filter_fn
from torch import nn

from .plugin import PLUGGED_MODELS, create_plugged

STT_AFTER_LAST_TWO = dict(
    attn_layer="stt",
    places=[{"stage": 2, "position": "after"}, {"stage": 3, "position": "after"}],
    options={"reduction": 16},
)
STT_AFTER_LAST = dict(attn_layer="stt", places=[{"stage": 3, "position": "after"}], options={"reduction": 16})

PLUGGED_MODELS.update(
    {
        "stt_convnext_atto": dict(
            trunk="convnext_atto", attention=dict(STT_AFTER_LAST_TWO, img_size=[224, 224])
        ),
        "stt_convnext_s": dict(
            trunk="convnext_atto",
            trunk_args=dict(patch_size=1, dims=(32, 64, 128, 256), depths=(2, 2, 2, 2)),
            attention=dict(STT_AFTER_LAST, img_size=[32, 32]),
        ),
    }
)


def _in1k(trunk: str) -> dict:
    # The plain ConvNeXt's ImageNet weights and preprocessing; STT starts at identity.
    return {**get_pretrained_cfg(trunk).to_dict(), "license": "apache-2.0"}


def _small_cfg() -> dict:
    # For 28-32 px images: resize, no crop.
    return {
        **get_pretrained_cfg("convnext_atto").to_dict(),
        "url": "",
        "hf_hub_id": None,
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "test_input_size": None,
        "test_crop_pct": None,
        "license": "apache-2.0",
    }


default_cfgs = generate_default_cfgs(
    {
        "stt_convnext_atto.d2_in1k": _in1k("convnext_atto.d2_in1k"),
        "stt_convnext_s": _small_cfg(),
    }
)


def _create(variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    return create_plugged(
        variant,
        pretrained,
        trunk_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


def _register(fn):
    # The remote-code loader may import a copy of this file beside an installed stt_hf.
    return fn if is_model(fn.__name__) else register_model(fn)


@_register
def stt_convnext_atto(pretrained=False, **kwargs) -> nn.Module:
    """ConvNeXt-Atto with STT after stages 2 and 3."""
    return _create("stt_convnext_atto", pretrained, **kwargs)


@_register
def stt_convnext_s(pretrained=False, **kwargs) -> nn.Module:
    """Narrow ConvNeXt for 28-32 px images (1x1 patch stem), STT after the last stage."""
    return _create("stt_convnext_s", pretrained, **kwargs)
