"""Comparison baselines at the same placement as STT.

- `SelfAttention2d`: dot-product self-attention over the H*W positions (the non-local block of
  Wang et al. 2018): the cost STT is built to avoid.
- `FlatSynthesizer`: Tay et al.'s Synthesizer applied to the flattened map, an N = H*W token
  sequence with N x N synthesized logits: the approach the STT paper argues against.

Both share STT's value/output convention, Z = X + BN(conv1x1(Y)) with BN's weight zero at init.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .stt import DenseSynth, _pair, _softmax_dtype


class _ResidualOut(nn.Module):
    """Shared output path: project back to C channels, zero-init BN, add the input."""

    def __init__(self, channels: int, value_channels: int, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Conv2d(value_channels, channels, 1, bias=False, device=device, dtype=dtype)
        self.norm = nn.BatchNorm2d(channels, device=device, dtype=dtype)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.proj(y))


def _check_input(x: torch.Tensor, channels: int, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} was built for channels={channels}, got input with "
                         f"{x.shape[1]} channels (shape {tuple(x.shape)})")


class SelfAttention2d(nn.Module):
    """Non-local dot-product self-attention: (B, C, H, W) -> (B, C, H, W), O(N^2) in N = H*W."""

    def __init__(self, channels: int, *, reduction: int = 2, min_channels: int = 16, heads: int = 1,
                 device=None, dtype=None, **_ignored):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        value_channels = max(channels // reduction, min_channels)
        if value_channels % heads:
            raise ValueError(f"heads={heads} must divide the value channels {value_channels}")
        self.channels, self.heads = channels, heads
        self.to_qkv = nn.Conv2d(channels, 3 * value_channels, 1, bias=False, **dd)
        self.out = _ResidualOut(channels, value_channels, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.channels, type(self).__name__)
        b, _, h, w = x.shape
        q, k, v = self.to_qkv(x).flatten(2).chunk(3, dim=1)  # each (B, Cv, N)
        q, k, v = (t.reshape(b, self.heads, -1, h * w) for t in (q, k, v))  # (B, G, c, N)
        logits = torch.einsum("bgcn,bgcm->bgnm", q, k) * q.shape[2] ** -0.5  # (B, G, N, N)
        attn = torch.softmax(_softmax_dtype(logits), dim=-1).to(v.dtype)
        y = torch.einsum("bgnm,bgcm->bgcn", attn, v).reshape(b, -1, h, w)
        return self.out(x, y)


class FlatSynthesizer(nn.Module):
    """Synthesizer (Tay et al. 2020) over the flattened map: N x N logits, N = H*W.

    `dense`: each position's value vector -> a row of N logits by a two-layer MLP.
    `random`: one learned N x N matrix shared by all inputs. Both are tied to the N they were built
    for, so the block serves only its feat_size.
    """

    def __init__(self, channels: int, *, synth: str = "dense", feat_size: int | Sequence[int] = 14,
                 reduction: int = 2, min_channels: int = 16, hidden: int = 32, heads: int = 1,
                 device=None, dtype=None, **_ignored):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if synth not in ("dense", "random"):
            raise ValueError(f"synth must be 'dense' or 'random' for FlatSynthesizer, got {synth!r}")
        value_channels = max(channels // reduction, min_channels)
        if value_channels % heads:
            raise ValueError(f"heads={heads} must divide the value channels {value_channels}")
        self.channels, self.heads, self.synth = channels, heads, synth
        self.feat_size = _pair(feat_size)
        n = self.feat_size[0] * self.feat_size[1]
        self.to_v = nn.Conv2d(channels, value_channels, 1, bias=False, **dd)
        if synth == "dense":
            self.dense = DenseSynth(heads, value_channels // heads, hidden, n, **dd)
        else:
            self.random = nn.Parameter(torch.randn(heads, n, n, **dd))
        self.out = _ResidualOut(channels, value_channels, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.channels, type(self).__name__)
        b, _, h, w = x.shape
        if (h, w) != self.feat_size:
            raise ValueError(f"FlatSynthesizer serves only feat_size={self.feat_size} (its N x N "
                             f"logits are tied to N), got spatial size {(h, w)}")
        v = self.to_v(x).reshape(b, self.heads, -1, h * w)  # (B, G, c, N)
        if self.synth == "dense":
            logits = self.dense(v.transpose(-1, -2))  # (B, G, N, N)
        else:
            logits = self.random.unsqueeze(0).expand(b, -1, -1, -1)
        attn = torch.softmax(_softmax_dtype(logits), dim=-1).to(v.dtype)
        y = torch.einsum("bgnm,bgcm->bgcn", attn, v).reshape(b, -1, h, w)
        return self.out(x, y)


__all__ = ["FlatSynthesizer", "SelfAttention2d"]
