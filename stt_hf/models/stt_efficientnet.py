"""STT EfficientNets: timm's EfficientNet with STT added after chosen stages (`plugin.add_attention`).

The trunk is timm's own `EfficientNet`, built by its registered name. Its blocks' attention slot already
holds squeeze-excitation, so STT sits after stages (EfficientNet-Lite, whose blocks have no SE, also
takes `block`). The pretrained configs point at the plain EfficientNet's ImageNet weights, and STT
starts as the identity.
"""

from __future__ import annotations

from timm.models import generate_default_cfgs, get_pretrained_cfg, is_model, register_model
from torch import nn

from .plugin import PLUGGED_MODELS, create_plugged

STT_AFTER_LAST_TWO = dict(
    attn_layer="stt",
    places=[{"stage": 3, "position": "after"}, {"stage": 4, "position": "after"}],
    options={"reduction": 16},
)

PLUGGED_MODELS.update(
    {
        "stt_efficientnet_b0": dict(
            trunk="efficientnet_b0", attention=dict(STT_AFTER_LAST_TWO, img_size=[224, 224])
        ),
        "stt_efficientnet_lite0": dict(
            trunk="efficientnet_lite0",
            attention=dict(
                attn_layer="stt",
                places=[{"stage": 4, "position": "block"}],
                options={"reduction": 16},
                img_size=[224, 224],
            ),
        ),
    }
)

default_cfgs = generate_default_cfgs(
    {
        "stt_efficientnet_b0.ra_in1k": {
            **get_pretrained_cfg("efficientnet_b0.ra_in1k").to_dict(),
            "license": "apache-2.0",
        },
        "stt_efficientnet_lite0.ra_in1k": {
            **get_pretrained_cfg("efficientnet_lite0.ra_in1k").to_dict(),
            "license": "apache-2.0",
        },
    }
)


def _create(variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    return create_plugged(variant, pretrained, **kwargs)


def _register(fn):
    # The remote-code loader may import a copy of this file beside an installed stt_hf.
    return fn if is_model(fn.__name__) else register_model(fn)


@_register
def stt_efficientnet_b0(pretrained=False, **kwargs) -> nn.Module:
    """EfficientNet-B0 with STT after its last two feature stages (blocks 4 and 6)."""
    return _create("stt_efficientnet_b0", pretrained, **kwargs)


@_register
def stt_efficientnet_lite0(pretrained=False, **kwargs) -> nn.Module:
    """EfficientNet-Lite0 with STT in the blocks of its last stage (their empty `se` slot)."""
    return _create("stt_efficientnet_lite0", pretrained, **kwargs)
