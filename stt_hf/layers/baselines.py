"""Comparison baselines at the same placement as STT.

- `SelfAttention2d`: dot-product self-attention over the H*W positions (the non-local block of
  Wang et al. 2018): the cost STT is built to avoid.
- `FlatSynthesizer`: Tay et al.'s Synthesizer applied to the flattened map, an N = H*W token
  sequence with N x N synthesized logits: the approach the STT paper argues against.
- `AxialAttention2d`: dot-product attention along H, then along W (Ho et al. 2019; Wang et al.
  2020, Axial-DeepLab): STT's height and width mode products with logits computed from the input.
- `CrissCrossAttention2d`: CCNet's criss-cross attention (Huang et al. 2019), each position attending
  to its row and column, applied recurrently.

All share STT's value/output convention, Z = X + BN(conv1x1(Y)) with BN's weight zero at init, and
none but the flattened synthesizer has parameters tied to H x W.
"""

from collections.abc import Sequence

import torch
from timm.layers import register_notrace_function
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
for _leaf in ("check_input", "check_size", "conv1x1", "softmax_f32"):
    torch.fx.wrap(_leaf)


@register_notrace_function
@torch.fx.wrap
def mask_self(logits: torch.Tensor) -> torch.Tensor:
    """(B, G, H, W, H) column logits with the query's own position (k == i) set to -inf.

    An FX leaf: the (H, H) mask is built from the traced map's size."""
    h = logits.shape[2]
    eye = torch.eye(h, dtype=torch.bool, device=logits.device).unsqueeze(1)  # (H, 1, H): i, broadcast j, k
    return logits.masked_fill(eye, float("-inf"))


class _ResidualOut(nn.Module):
    """Shared output path: project back to C channels, zero-init BN, add the input."""

    def __init__(self, channels: int, value_channels: int, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Conv2d(value_channels, channels, 1, bias=False, device=device, dtype=dtype)
        self.norm = nn.BatchNorm2d(channels, device=device, dtype=dtype)
        self.zero_init_last()

    def zero_init_last(self) -> None:
        if isinstance(self.norm, nn.BatchNorm2d):  # not yet folded by fuse_for_inference
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


def attend(v: torch.Tensor, logits: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Y = V softmax(logits)^T over the flattened positions: v (B, G, c, N), logits (B or 1, G, N, N)
    -> (B, G*c, H, W)."""
    attn = softmax_f32(logits).to(v.dtype)
    b, g, c, _ = v.shape  # explicit sizes, not -1: an empty batch reshapes too
    return (v @ attn.transpose(-1, -2)).reshape(b, g * c, h, w)


class _ResidualAttention(nn.Module):
    """What the attention baselines share: their sizes (`cv`: the value channels, split into `heads`) and
    folding their residual output `self.out` (a `_ResidualOut`; not annotated on the class, which
    TorchScript would read as an attribute type)."""

    def __init__(self, channels: int, reduction: int, min_channels: int, heads: int):
        super().__init__()
        self.channels, self.heads = channels, heads
        self.cv = value_channels(channels, reduction, min_channels, heads)

    @torch.jit.ignore
    def fuse_for_inference(self):
        """Fold the output BatchNorm into the projection conv (eval mode only); returns self."""
        self.out.fuse_for_inference()
        return self


class SelfAttention2d(_ResidualAttention):
    """Non-local dot-product self-attention: (B, C, H, W) -> (B, C, H, W), O(N^2) in N = H*W."""

    def __init__(self, channels: int, *, reduction: int = 2, min_channels: int = 16, heads: int = 1,
                 device=None, dtype=None, **_ignored):
        super().__init__(channels, reduction, min_channels, heads)
        self.to_qkv = nn.Conv2d(channels, 3 * self.cv, 1, bias=False, device=device, dtype=dtype)
        self.out = _ResidualOut(channels, self.cv, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x, self.channels, "SelfAttention2d")
        b, _, h, w = x.shape
        c = self.to_qkv.weight.shape[0] // (3 * self.heads)  # explicit, not -1: an empty batch reshapes too
        qkv = conv1x1(x, self.to_qkv.weight).reshape(b, 3, self.heads, c, h * w)  # (B, 3, G, c, N)
        q, k, v = qkv.unbind(1)
        logits = (q.transpose(-1, -2) @ k) * q.shape[2] ** -0.5  # (B, G, N, N)
        return self.out(x, attend(v, logits, h, w))


class FlatSynthesizer(_ResidualAttention):
    """Synthesizer (Tay et al. 2020) over the flattened map: N x N logits, N = H*W.

    `dense`: each position's value vector -> a row of N logits by a two-layer MLP.
    `random`: one learned N x N matrix shared by all inputs. Both are tied to the N they were built
    for, so the block serves only its feat_size.
    """

    def __init__(self, channels: int, *, synth: str = "dense", feat_size: int | Sequence[int] = 14,
                 reduction: int = 2, min_channels: int = 16, hidden: int = 32, heads: int = 1,
                 device=None, dtype=None, **_ignored):
        if synth not in ("dense", "random"):
            raise ValueError(f"synth must be 'dense' or 'random' for FlatSynthesizer, got {synth!r}")
        super().__init__(channels, reduction, min_channels, heads)
        dd = dict(device=device, dtype=dtype)
        cv, self.synth = self.cv, synth
        self.feat_size = to_pair(feat_size)
        n = self.feat_size[0] * self.feat_size[1]
        self.to_v = nn.Conv2d(channels, cv, 1, bias=False, **dd)
        # The unused one is None, so TorchScript compiles only the branch this block takes.
        self.dense = DenseSynth(heads, cv // heads, hidden, n, **dd) if synth == "dense" else None
        self.random = nn.Parameter(torch.empty(heads, n, n, **dd)) if synth == "random" else None
        self.out = _ResidualOut(channels, cv, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.random is not None:
            nn.init.normal_(self.random)

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
        return self.out(x, attend(v, logits, h, w))


class AxialAttention2d(_ResidualAttention):
    """Multi-head dot-product attention along H, then along W: (B, C, H, W) -> (B, C, H, W).

    Each pass has its own 1x1 query/key/value projection (the W pass reads the H pass's output, as in
    Axial-DeepLab's stacked axial layers), so every output position has seen every input position,
    at O(N * (H + W)) cost instead of self-attention's O(N^2). No position encoding, like
    `SelfAttention2d`: the block then serves any H x W at run time with nothing to interpolate, and the
    convolutions in front of it already carry where things are (relative encodings, Axial-DeepLab's
    choice, would tie a table to the largest span along each axis).
    """

    def __init__(self, channels: int, *, reduction: int = 2, min_channels: int = 16, heads: int = 1,
                 device=None, dtype=None, **_ignored):
        super().__init__(channels, reduction, min_channels, heads)
        dd, cv = dict(device=device, dtype=dtype), self.cv
        self.to_qkv_h = nn.Conv2d(channels, 3 * cv, 1, bias=False, **dd)
        self.to_qkv_w = nn.Conv2d(cv, 3 * cv, 1, bias=False, **dd)
        self.out = _ResidualOut(channels, cv, **dd)

    def split_heads(self, qkv: torch.Tensor) -> list[torch.Tensor]:
        b, c3, h, w = qkv.shape  # explicit sizes, not -1: an empty batch reshapes too
        c = c3 // (3 * self.heads)
        return qkv.reshape(b, 3, self.heads, c, h, w).unbind(1)  # q, k, v: (B, G, c, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x, self.channels, "AxialAttention2d")
        b, _, h, w = x.shape
        q, k, v = self.split_heads(conv1x1(x, self.to_qkv_h.weight))
        logits = torch.einsum("bgcij,bgckj->bgjik", q, k) * q.shape[2] ** -0.5  # (B, G, W, H, H)
        attn = softmax_f32(logits).to(v.dtype)
        cv = v.shape[1] * v.shape[2]
        y = torch.einsum("bgjik,bgckj->bgcij", attn, v).reshape(b, cv, h, w)  # along H: (B, Cv, H, W)
        q, k, v = self.split_heads(conv1x1(y, self.to_qkv_w.weight))
        logits = torch.einsum("bgcij,bgcil->bgijl", q, k) * q.shape[2] ** -0.5  # (B, G, H, W, W)
        attn = softmax_f32(logits).to(v.dtype)
        y = torch.einsum("bgijl,bgcil->bgcij", attn, v).reshape(b, cv, h, w)  # along W: (B, Cv, H, W)
        return self.out(x, y)


class CrissCrossAttention2d(_ResidualAttention):
    """CCNet's recurrent criss-cross attention (Huang et al. 2019): (B, C, H, W) -> (B, C, H, W).

    Y_0 = conv1x1(X) (the value reduction, CCNet's `conva`), then `recurrence` times with shared
    weights Y_{r+1} = Y_r + CC(Y_r), where CC attends from each position (i, j) to the H + W - 1
    positions of its column and row (itself once), one softmax over all of them, with queries, keys
    and values projected from Y_r. Two recurrences (CCNet's default, R = 2) reach every position.
    CCNet is single-head with queries and keys at C/8 channels; here q, k and v are all Cv channels
    split into heads, like `SelfAttention2d`. No position encoding, as in CCNet: any H x W at run time.
    """

    def __init__(self, channels: int, *, reduction: int = 2, min_channels: int = 16, heads: int = 1,
                 recurrence: int = 2, device=None, dtype=None, **_ignored):
        if not (isinstance(recurrence, int) and recurrence > 0):
            raise ValueError(f"recurrence must be a positive int for CrissCrossAttention2d, "
                             f"got {recurrence!r}")
        super().__init__(channels, reduction, min_channels, heads)
        dd, cv = dict(device=device, dtype=dtype), self.cv
        self.recurrence = recurrence
        self.to_v = nn.Conv2d(channels, cv, 1, bias=False, **dd)
        self.to_qkv = nn.Conv2d(cv, 3 * cv, 1, bias=False, **dd)
        self.out = _ResidualOut(channels, cv, **dd)

    def criss_cross(self, y: torch.Tensor) -> torch.Tensor:
        """One criss-cross step, (B, Cv, H, W) -> (B, Cv, H, W)."""
        b, cv, h, w = y.shape  # explicit sizes, not -1: an empty batch reshapes too
        qkv = conv1x1(y, self.to_qkv.weight).reshape(b, 3, self.heads, cv // self.heads, h, w)
        q, k, v = qkv.unbind(1)  # (B, G, c, H, W)
        scale = q.shape[2] ** -0.5
        column = mask_self(torch.einsum("bgcij,bgckj->bgijk", q, k) * scale)  # (B, G, H, W, H)
        row = torch.einsum("bgcij,bgcil->bgijl", q, k) * scale  # (B, G, H, W, W)
        attn = softmax_f32(torch.cat([column, row], -1)).to(v.dtype)  # (B, G, H, W, H + W)
        out = (torch.einsum("bgijk,bgckj->bgcij", attn[..., :h], v)
               + torch.einsum("bgijl,bgcil->bgcij", attn[..., h:], v))  # (B, G, c, H, W)
        return out.reshape(b, cv, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x, self.channels, "CrissCrossAttention2d")
        y = conv1x1(x, self.to_v.weight)  # (B, Cv, H, W)
        for _ in range(self.recurrence):
            y = y + self.criss_cross(y)
        return self.out(x, y)


__all__ = ["AxialAttention2d", "CrissCrossAttention2d", "FlatSynthesizer", "SelfAttention2d"]
