"""Comparison baselines at the same placement as STT.

- `SelfAttention2d`: dot-product self-attention over the H*W positions (the non-local block of
  Wang et al. 2018): the cost STT is built to avoid.
- `FlatSynthesizer`: Tay et al.'s Synthesizer applied to the flattened map, an N = H*W token
  sequence with N x N synthesized logits: the approach the STT paper argues against.

Both share STT's value/output convention, Z = X + BN(conv1x1(Y)) with BN's weight zero at init.
"""

from collections.abc import Sequence

import torch
from torch import nn

from .helpers import (
    check_foldable,
    check_input,
    check_size,
    conv1x1,
    fuse_conv_bn,
    softmax_f32,
    to_pair,
    value_channels,
)
from .stt import DenseSynth

# FX leaves where this module calls them (torch.fx.wrap patches the caller's globals).
torch.fx.wrap("check_input")
torch.fx.wrap("check_size")
torch.fx.wrap("conv1x1")
torch.fx.wrap("softmax_f32")


class _ResidualOut(nn.Module):
    """Shared output path: project back to C channels, zero-init BN, add the input."""

    def __init__(self, channels: int, value_channels: int, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Conv2d(value_channels, channels, 1, bias=False, device=device, dtype=dtype)
        self.norm = nn.BatchNorm2d(channels, device=device, dtype=dtype)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.norm(conv1x1(y, self.proj.weight, self.proj.bias))

    @torch.jit.ignore
    def fuse_for_inference(self) -> "_ResidualOut":
        """Fold the output BatchNorm into the projection conv (eval mode only)."""
        check_foldable(self)
        if isinstance(self.norm, nn.BatchNorm2d):
            self.proj, self.norm = fuse_conv_bn(self.proj, self.norm), nn.Identity()
        return self


class SelfAttention2d(nn.Module):
    """Non-local dot-product self-attention: (B, C, H, W) -> (B, C, H, W), O(N^2) in N = H*W."""

    def __init__(self, channels: int, *, reduction: int = 2, min_channels: int = 16, heads: int = 1,
                 device=None, dtype=None, **_ignored):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        cv = value_channels(channels, reduction, min_channels, heads)
        self.channels, self.heads = channels, heads
        self.to_qkv = nn.Conv2d(channels, 3 * cv, 1, bias=False, **dd)
        self.out = _ResidualOut(channels, cv, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x, self.channels, "SelfAttention2d")
        b, _, h, w = x.shape
        c = self.to_qkv.weight.shape[0] // (3 * self.heads)  # explicit, not -1: an empty batch reshapes too
        qkv = conv1x1(x, self.to_qkv.weight).reshape(b, 3, self.heads, c, h * w)  # (B, 3, G, c, N)
        q, k, v = qkv.unbind(1)
        logits = (q.transpose(-1, -2) @ k) * q.shape[2] ** -0.5  # (B, G, N, N)
        attn = softmax_f32(logits).to(v.dtype)
        y = (v @ attn.transpose(-1, -2)).reshape(b, self.heads * c, h, w)
        return self.out(x, y)

    @torch.jit.ignore
    def fuse_for_inference(self):
        """Fold the output BatchNorm into the projection conv (eval mode only); returns self."""
        self.out.fuse_for_inference()
        return self


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
        cv = value_channels(channels, reduction, min_channels, heads)
        self.channels, self.heads, self.synth = channels, heads, synth
        self.feat_size = to_pair(feat_size)
        n = self.feat_size[0] * self.feat_size[1]
        self.to_v = nn.Conv2d(channels, cv, 1, bias=False, **dd)
        # The unused one is None, so TorchScript compiles only the branch this block takes.
        self.dense = DenseSynth(heads, cv // heads, hidden, n, **dd) if synth == "dense" else None
        self.random = nn.Parameter(torch.randn(heads, n, n, **dd)) if synth == "random" else None
        self.out = _ResidualOut(channels, cv, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x, self.channels, "FlatSynthesizer")
        x = check_size(x, self.feat_size, "FlatSynthesizer", " (its N x N logits are tied to N)")
        b, _, h, w = x.shape
        cv = self.to_v.weight.shape[0]  # explicit, not -1: an empty batch reshapes too
        v = conv1x1(x, self.to_v.weight).reshape(b, self.heads, cv // self.heads, h * w)  # (B, G, c, N)
        if self.dense is not None:
            logits = self.dense(v.transpose(-1, -2))  # (B, G, N, N)
        else:
            assert self.random is not None
            logits = self.random.unsqueeze(0)  # (1, G, N, N), broadcast over the batch
        attn = softmax_f32(logits).to(v.dtype)
        y = (v @ attn.transpose(-1, -2)).reshape(b, cv, h, w)
        return self.out(x, y)

    @torch.jit.ignore
    def fuse_for_inference(self):
        """Fold the output BatchNorm into the projection conv (eval mode only); returns self."""
        self.out.fuse_for_inference()
        return self


__all__ = ["FlatSynthesizer", "SelfAttention2d"]
