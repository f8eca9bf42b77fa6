"""STT: Synthesizing Tensor Transformations, a self-attention plug-in for CNN feature maps.

The feature map stays a 3rd-order tensor (C x H x W). For each chosen mode (channel, height,
width) a small synthesizer produces one attention matrix, and the matrices are applied with mode-n
products. There is no query-key dot product and the map is never flattened to a sequence.

The paper (arXiv 2201.01410) publishes no equations; this module is the project's reconstruction,
described in README.md ("The operator").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("c", "h", "w")
SYNTHS = ("dense", "random", "factorized_random", "mixture")

# Mode products as einsums over V of shape (B, G, c, H, W); A_m has shape (B or 1, G, I_m, I_m).
MODE_PRODUCT = {
    "c": "bgij,bgjhw->bgihw",
    "h": "bgij,bgcjw->bgciw",
    "w": "bgij,bgchj->bgchi",
}


def _softmax_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 for the softmax: bf16/fp16 are upcast, float64 stays float64."""
    return logits if logits.dtype == torch.float64 else logits.float()


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"feat_size must be an int or an (H, W) pair, got {size}")
    return size


class DenseSynth(nn.Module):
    """Input-conditioned logits, one row per slice: B_i = W2 relu(W1 x_i + b1) + b2, per head.

    (B, G, I, D) slice descriptors -> (B, G, I, O) logits.
    """

    def __init__(self, heads: int, in_dim: int, hidden: int, out_dim: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.w1 = nn.Parameter(torch.empty(heads, in_dim, hidden, **dd))
        self.b1 = nn.Parameter(torch.zeros(heads, 1, hidden, **dd))
        self.w2 = nn.Parameter(torch.empty(heads, hidden, out_dim, **dd))
        self.b2 = nn.Parameter(torch.zeros(heads, 1, out_dim, **dd))
        nn.init.normal_(self.w1, std=in_dim**-0.5)
        nn.init.normal_(self.w2, std=hidden**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(torch.einsum("bgid,gdk->bgik", x, self.w1) + self.b1)
        return torch.einsum("bgik,gko->bgio", x, self.w2) + self.b2


class RandomSynth(nn.Module):
    """Input-independent logits R of shape (1, G, I, I): learned, fixed (a buffer) or factorized P Q^T."""

    def __init__(self, heads: int, size: int, *, fixed: bool = False, rank: int | None = None,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.factorized = rank is not None
        if self.factorized:
            self.p = nn.Parameter(torch.randn(heads, size, rank, **dd) * rank**-0.5)
            self.q = nn.Parameter(torch.randn(heads, size, rank, **dd))
        elif fixed:
            self.register_buffer("r", torch.randn(heads, size, size, **dd))
        else:
            self.r = nn.Parameter(torch.randn(heads, size, size, **dd))

    def forward(self) -> torch.Tensor:
        r = self.p @ self.q.transpose(-1, -2) if self.factorized else self.r
        return r.unsqueeze(0)


class ModeSynth(nn.Module):
    """Synthesizes the logits of one mode from V (B, G, c, H, W) -> (B or 1, G, I, I)."""

    def __init__(self, mode: str, synth: str, heads: int, head_channels: int, ref_size: int, *,
                 hidden: int, pool_size: int, rank: int, fixed: bool, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.mode, self.ref_size, self.pool_size = mode, ref_size, pool_size
        self.dense = self.random = self.mix_logit = None
        if synth in ("dense", "mixture"):
            in_dim = pool_size * pool_size if mode == "c" else head_channels
            self.dense = DenseSynth(heads, in_dim, hidden, ref_size, **dd)
        if synth in ("random", "factorized_random", "mixture"):
            rank_ = rank if synth == "factorized_random" else None
            self.random = RandomSynth(heads, ref_size, fixed=fixed, rank=rank_, **dd)
        if synth == "mixture":
            # sigmoid(0) = 0.5: start as an even blend of the dense and random maps.
            self.mix_logit = nn.Parameter(torch.zeros(1, heads, 1, 1, **dd))

    def describe(self, v: torch.Tensor) -> torch.Tensor:
        """One descriptor per slice along this mode, keeping the tensor structure."""
        if self.mode == "c":  # (B, G, c, s*s): each channel map pooled to s x s
            b, g, c, h, w = v.shape
            pooled = F.adaptive_avg_pool2d(v.reshape(b, g * c, h, w), self.pool_size)
            return pooled.reshape(b, g, c, -1)
        if self.mode == "h":  # (B, G, H, c): mean over W
            return v.mean(dim=-1).transpose(-1, -2)
        return v.mean(dim=-2).transpose(-1, -2)  # "w": (B, G, W, c), mean over H

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        size = v.shape[{"c": 2, "h": 3, "w": 4}[self.mode]]
        resize = size != self.ref_size
        logits = None
        if self.dense is not None:
            logits = self.dense(self.describe(v))  # (B, G, size, ref_size)
            if resize:  # rows already follow the input; resize the columns
                b, g = logits.shape[:2]
                logits = F.interpolate(logits.reshape(b * g, size, self.ref_size), size=size,
                                       mode="linear", align_corners=False).reshape(b, g, size, size)
        if self.random is not None:
            rand = self.random()  # (1, G, ref, ref)
            if resize:
                rand = F.interpolate(rand, size=(size, size), mode="bilinear", align_corners=False)
            if logits is None:
                logits = rand
            else:
                a = torch.sigmoid(self.mix_logit)
                logits = a * logits + (1 - a) * rand
        return logits


class STT(nn.Module):
    """Synthesizing Tensor Transformations block: (B, C, H, W) -> (B, C, H, W).

    Z = X + BN(conv1x1(V x_c A_c x_h A_h x_w A_w)),  V = conv1x1(X) split into `heads` groups,
    with each A_m = softmax(L_m / temperature) synthesized per mode. BN's weight starts at zero, so a
    freshly inserted block is the identity.

    Args:
        channels: input (and output) channels C.
        modes: which of "c", "h", "w" to attend over (any non-empty subset, e.g. "hw").
        synth: "dense" (from the input), "random" (learned, input-independent), "factorized_random"
            (low-rank P Q^T) or "mixture" (learned blend of dense and random).
        heads: groups the value channels are split into; each has its own attention matrices.
        reduction, min_channels: value channels Cv = max(C // reduction, min_channels).
        hidden: hidden width of the dense synthesizer MLP.
        pool_size: the channel-mode descriptor pools each channel map to pool_size x pool_size.
        rank: rank k of the factorized random maps.
        temperature: softmax temperature tau.
        feat_size: reference (H, W) the synthesizers are built for. Other sizes interpolate the
            synthesized maps, unless resize=False, in which case they are an error.
        fixed: random maps are a non-trained buffer (Tay et al.'s "fixed random").
    """

    def __init__(
        self,
        channels: int,
        *,
        modes: str | Sequence[str] = "chw",
        synth: str = "dense",
        heads: int = 2,
        reduction: int = 2,
        min_channels: int = 16,
        hidden: int = 32,
        pool_size: int = 4,
        rank: int = 8,
        temperature: float = 1.0,
        feat_size: int | Sequence[int] = 14,
        resize: bool = True,
        fixed: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        modes = tuple(dict.fromkeys(modes))  # keep order, drop repeats
        if not modes or any(m not in MODES for m in modes):
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {modes!r}")
        if synth not in SYNTHS:
            raise ValueError(f"synth must be one of {SYNTHS}, got {synth!r}")
        if fixed and synth not in ("random", "mixture"):
            raise ValueError(f"fixed=True applies to synth='random' or 'mixture', got synth={synth!r}")
        for name, value in dict(channels=channels, heads=heads, reduction=reduction, hidden=hidden,
                                pool_size=pool_size, rank=rank).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        value_channels = max(channels // reduction, min_channels)
        if value_channels % heads:
            raise ValueError(f"heads={heads} must divide the value channels "
                             f"max(channels // reduction, min_channels) = {value_channels}")
        self.channels, self.modes, self.synth = channels, modes, synth
        self.heads, self.temperature, self.resize = heads, temperature, resize
        self.feat_size = _pair(feat_size)
        head_channels = value_channels // heads
        ref = {"c": head_channels, "h": self.feat_size[0], "w": self.feat_size[1]}

        self.to_v = nn.Conv2d(channels, value_channels, 1, bias=False, **dd)
        self.synths = nn.ModuleDict({
            m: ModeSynth(m, synth, heads, head_channels, ref[m], hidden=hidden, pool_size=pool_size,
                         rank=rank, fixed=fixed, **dd)
            for m in modes
        })
        self.proj = nn.Conv2d(value_channels, channels, 1, bias=False, **dd)
        self.norm = nn.BatchNorm2d(channels, **dd)
        nn.init.zeros_(self.norm.weight)  # identity at init: safe to drop into a pretrained net

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"STT expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise ValueError(f"STT was built for channels={self.channels}, got input with "
                             f"{x.shape[1]} channels (shape {tuple(x.shape)})")
        if not self.resize and tuple(x.shape[-2:]) != self.feat_size:
            raise ValueError(f"STT built with resize=False serves only feat_size={self.feat_size}, "
                             f"got spatial size {tuple(x.shape[-2:])}")

    def attention_maps(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """Softmax-normalized attention per mode, (B or 1, G, I_m, I_m), in float32 (float64 if V is)."""
        maps = {}
        for m, synth in self.synths.items():
            logits = _softmax_dtype(synth(v))
            if self.temperature != 1.0:  # skip a divide in the common case: small ops dominate at small maps
                logits = logits / self.temperature
            maps[m] = torch.softmax(logits, dim=-1)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        b, _, h, w = x.shape
        v = self.to_v(x)
        v = v.reshape(b, self.heads, -1, h, w)  # (B, G, c, H, W)
        y = v
        for m, attn in self.attention_maps(v).items():
            y = torch.einsum(MODE_PRODUCT[m], attn.to(y.dtype).expand(b, -1, -1, -1), y)
        y = y.reshape(b, -1, h, w)  # (B, Cv, H, W)
        # In-place add: one fewer full-size map alive at the peak (BN's backward does not need its output).
        return self.norm(self.proj(y)).add_(x)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, modes={''.join(self.modes)}, synth={self.synth}, "
                f"heads={self.heads}, feat_size={self.feat_size}, temperature={self.temperature}")

