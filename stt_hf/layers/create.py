"""Attention modules by name, so a model can place any of them at the same spot.

Every factory takes (channels, feat_size, **options) and returns a module mapping
(B, C, H, W) -> (B, C, H, W). Options a module does not use are ignored, so one set of model
keyword arguments can sweep all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from timm.layers import EcaModule as TimmEcaModule
from timm.layers import get_attn
from timm.models.resnet import Bottleneck
from torch import nn

from .baselines import AxialAttention2d, CrissCrossAttention2d, FlatSynthesizer, SelfAttention2d
from .options import STT_OPTION_NAMES
from .stt import STT

# What the STT factory passes on: the block's declared options, and where to build it.
STT_OPTIONS = (*STT_OPTION_NAMES, "device", "dtype")


def _stt(channels, feat_size, **options):
    return STT(channels, feat_size=feat_size, **{k: v for k, v in options.items() if k in STT_OPTIONS})


def _self_attn(channels, feat_size, reduction=2, min_channels=16, device=None, dtype=None, **_):
    return SelfAttention2d(channels, reduction=reduction, min_channels=min_channels,
                           device=device, dtype=dtype)


def _axial(channels, feat_size, reduction=2, min_channels=16, heads=1, device=None, dtype=None, **_):
    return AxialAttention2d(channels, reduction=reduction, min_channels=min_channels, heads=heads,
                            device=device, dtype=dtype)


def _criss_cross(channels, feat_size, reduction=2, min_channels=16, heads=1, device=None, dtype=None, **_):
    return CrissCrossAttention2d(channels, reduction=reduction, min_channels=min_channels, heads=heads,
                                 device=device, dtype=dtype)


def _flat_synth(kind, channels, feat_size, reduction=2, min_channels=16, hidden=32, device=None,
                dtype=None, **_):
    return FlatSynthesizer(channels, synth=kind, feat_size=feat_size, reduction=reduction,
                           min_channels=min_channels, hidden=hidden, device=device, dtype=dtype)


class InputSavingReLU(nn.Module):
    """ReLU into a new tensor, with a backward that reads its input rather than its output.

    Placed inside a residual block, an attention module's output gets the host's shortcut added in place
    (timm's `x += shortcut`); autograd refuses that on a tensor its own backward saved, as ReLU saves its
    output. clamp(min=0) is the same function and saves its input instead.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)


def _res_block(channels, feat_size, reduction=16, min_channels=16, device=None, dtype=None, **_):
    """Capacity control: a plain bottleneck residual block as wide as STT's value (C -> Cv -> Cv -> C).

    About STT's parameters and MACs at the same place, with no attention: what any extra block gives.
    """
    width = max(channels // reduction, min_channels)
    planes = channels // Bottleneck.expansion  # timm's width = planes * base_width / 64
    block = Bottleneck(channels, planes, base_width=width * 64 // planes, device=device, dtype=dtype)
    nn.init.zeros_(block.bn3.weight)  # identity at init, like STT (timm's zero_init_last)
    block.act3 = InputSavingReLU()  # its output may be added to in place by a host block
    return block


class EcaModule(TimmEcaModule):
    """timm's ECA with explicit sizes in its views: timm's `view(B, 1, -1)` cannot infer -1 from an empty
    batch (B=0), which every other module here passes through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        y = self.conv(x.mean((2, 3)).view(b, 1, c))  # (B, 1, C) for the 1-D conv over channels
        if self.conv2 is not None:
            y = self.conv2(self.act(y))
        return x * self.gate(y).view(b, c, 1, 1).expand_as(x)


def _timm_attn(name, channels, feat_size, device=None, dtype=None, **_):
    module = EcaModule if name == "eca" else get_attn(name)
    return module(channels, device=device, dtype=dtype)


ATTN_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "stt": _stt,
    "self_attn": _self_attn,
    "axial": _axial,
    "criss_cross": _criss_cross,
    "flat_dense": partial(_flat_synth, "dense"),
    "flat_random": partial(_flat_synth, "random"),
    "res_block": _res_block,
    **{name: partial(_timm_attn, name) for name in ("se", "eca", "cbam", "gc")},
}
# Modules whose parameters are tied to the spatial size they were built for.
FIXED_SIZE_ATTN = ("flat_dense", "flat_random")


def create_attn(name: str, channels: int, feat_size: tuple[int, int], **options) -> nn.Module:
    """Build the attention module `name` for a (channels, *feat_size) feature map."""
    if name not in ATTN_FACTORIES:
        raise ValueError(f"attn_layer must be one of {sorted(ATTN_FACTORIES)}, got {name!r}")
    return ATTN_FACTORIES[name](channels, feat_size, **options)
