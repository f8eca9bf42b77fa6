"""The STT block as it was before the kernel-economy rewrite, frozen for the equivalence test.

tests/test_layers_stt_kernels.py checks that `stt_hf.layers.stt.STT` computes the same outputs and
gradients as this one, with the same state-dict keys. Only that test imports it; do not edit it.
"""
# ruff: noqa

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from stt_hf.layers.options import POSITIVE_INT, STT_OPTION_NAMES, STT_SPEC, check_stt_options, resolve

def to_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """An (H, W) pair from an int or a pair; anything else is an error (timm's to_2tuple passes it)."""
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"feat_size must be an int or an (H, W) pair, got {size}")
    return size


def value_channels(channels: int, reduction: int, min_channels: int, heads: int) -> int:
    """Cv = max(C // reduction, min_channels), which `heads` must divide."""
    cv = max(channels // reduction, min_channels)
    if cv % heads:
        raise ValueError(f"heads={heads} must divide the value channels {cv}: max(channels // reduction, "
                         f"min_channels) = max({channels} // {reduction}, {min_channels}) = {cv}")
    return cv


def _fmt(shape: list[int]) -> str:
    # Formats like a Python tuple in eager mode and in TorchScript (which has no tuple(list)).
    return "(" + ", ".join([str(s) for s in shape]) + ")"


@register_notrace_function
@torch.fx.wrap
def check_input(x: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    """x unchanged if it is (B, channels, H, W), else a ValueError naming the module `name`.

    Returns x so the check stays in the data path of a traced graph (dead-code elimination keeps it).
    """
    if x.ndim != 4:
        raise ValueError(f"{name} expects a 4-D input (B, C, H, W), got shape {_fmt(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} was built for channels={channels}, got input with "
                         f"{x.shape[1]} channels (shape {_fmt(x.shape)})")
    return x


@register_notrace_function
@torch.fx.wrap
def check_size(x: torch.Tensor, feat_size: tuple[int, int], what: str, why: str = "") -> torch.Tensor:
    """x unchanged if its spatial size is feat_size, else a ValueError: `what` serves only feat_size."""
    if x.shape[-2] != feat_size[0] or x.shape[-1] != feat_size[1]:
        raise ValueError(f"{what} serves only feat_size={_fmt([feat_size[0], feat_size[1]])}{why}, "
                         f"got spatial size {_fmt(x.shape[-2:])}")
    return x


@register_notrace_function
@torch.fx.wrap
def softmax_f32(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(logits / temperature) over the last dim in at least float32 (bf16/fp16 are upcast)."""
    if logits.dtype != torch.float32 and logits.dtype != torch.float64:  # no op dispatched when not needed
        logits = logits.float()
    if temperature != 1.0:  # skip a divide in the common case: small ops dominate at small maps
        logits = logits / temperature
    return logits.softmax(dim=-1)


@register_notrace_function
@torch.fx.wrap
def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 convolution (B, Cin, H, W) -> (B, Cout, H, W) with a (Cout, Cin, 1, 1) weight.

    A contiguous (NCHW) map goes through one batched matmul, W @ X over the flattened map: on a CPU,
    oneDNN runs a thin 1x1 conv on NCHW up to 4x below that (it reorders the map to a blocked layout
    and back), which made STT's projections the slowest convolutions in the network. Other layouts
    (channels_last, where oneDNN's conv is already fast) keep F.conv2d.
    """
    if not x.is_contiguous():
        return F.conv2d(x, weight, bias)
    b, _, h, w = x.shape
    # bmm with the weight expanded (a stride-0 view): `W @ X` would broadcast by transposing X into a copy.
    w2d = weight.reshape(weight.shape[0], -1).expand(b, -1, -1)  # (B, Cout, Cin)
    flat = x.reshape(b, x.shape[1], h * w)  # (B, Cin, HW), a view
    if bias is None:
        y = torch.bmm(w2d, flat)
    else:  # the bias as baddbmm's broadcast input: no separate pass over the output
        y = torch.baddbmm(bias.unsqueeze(-1), w2d, flat)
    return y.reshape(b, -1, h, w)


@register_notrace_function
@torch.fx.wrap
def add_conv1x1(residual: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
    """residual + conv1x1(x, weight, bias) with one pass over the output (B, Cout, H, W) besides the matmul.

    The bias is added while the residual is copied into a new output (`residual + bias`), and the matmul
    accumulates into it in place (`baddbmm_`): a separate bias or residual add would write the largest map
    of the block once more, and an augmented [W | b] @ [X; 1] costs two concatenations per call.
    """
    if not (x.is_contiguous() and residual.is_contiguous()):
        return F.conv2d(x, weight, bias).add_(residual)
    b, cin, h, w = x.shape
    dtype = residual.dtype  # in-place ops are not autocast: every operand explicitly in the output's dtype
    out = (residual + bias.to(dtype).reshape(-1, 1, 1)).reshape(b, -1, h * w)  # (B, Cout, HW), a new tensor
    out.baddbmm_(weight.to(dtype).reshape(weight.shape[0], -1).expand(b, -1, -1),
                 x.to(dtype).reshape(b, cin, h * w))
    return out.reshape(residual.shape)


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv computing bn(conv(x)) with eval-mode BN folded into its weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused.requires_grad_(conv.weight.requires_grad)


def check_foldable(module: nn.Module) -> None:
    if module.training:
        raise RuntimeError(f"{type(module).__name__}.fuse_for_inference() folds BatchNorm running "
                           f"statistics: call .eval() first")



MODE_DIMS = {"c": 2, "h": 3, "w": 4}  # the dim of each mode in V of shape (B, G, c, H, W)



@register_notrace_function
@torch.fx.wrap
def fit_columns(logits: torch.Tensor, ref_size: int) -> torch.Tensor:
    """Dense logits (B, G, I, ref_size) -> (B, G, I, I): the rows already follow the input, resize the
    columns (linear interpolation) when I differs from the size the synthesizer was built for."""
    b, g, size, _ = logits.shape
    if size == ref_size:
        return logits
    logits = F.interpolate(logits.reshape(b * g, size, ref_size), size=size, mode="linear",
                           align_corners=False)
    return logits.reshape(b, g, size, size)


@register_notrace_function
@torch.fx.wrap
def fit_square(logits: torch.Tensor, size: int) -> torch.Tensor:
    """Input-independent logits (1, G, ref, ref) -> (1, G, size, size) by bilinear interpolation."""
    if logits.shape[-1] == size:
        return logits
    return F.interpolate(logits, size=[size, size], mode="bilinear", align_corners=False)


def pool_1d(n: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """(n, size): a length-n signal times this matrix is its adaptive average pool to `size` (pooling the
    identity, so the windows are adaptive_avg_pool1d's own)."""
    eye = torch.eye(n, dtype=like.dtype, device=like.device)
    return F.adaptive_avg_pool1d(eye.unsqueeze(1), size).squeeze(1)


@register_notrace_function
@torch.fx.wrap
def pool_matrix(h: int, w: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """(H W, size^2 + H + W): a map flattened over (H, W) times this matrix is its size x size adaptive
    average pool, its row means (over W) and its column means (over H), side by side.

    Every synthesizer's descriptor then comes from one matmul over V: pooling V's B G c maps directly,
    and two mean reductions over 7 or 14 elements, took most of the synthesizers' time on a CPU. Each
    part is separable, a Kronecker product of 1-D pools (far cheaper to build than pooling H W planes).
    """
    eye_h = torch.eye(h, dtype=like.dtype, device=like.device)
    eye_w = torch.eye(w, dtype=like.dtype, device=like.device)
    pooled = torch.kron(pool_1d(h, size, like), pool_1d(w, size, like))  # (H W, size^2)
    row_means = torch.kron(eye_h, pool_1d(w, 1, like))  # (H W, H)
    column_means = torch.kron(pool_1d(h, 1, like), eye_w)  # (H W, W)
    return torch.cat([pooled, row_means, column_means], dim=1)


def mode_product(y: torch.Tensor, attn: torch.Tensor, dim: int) -> torch.Tensor:
    """Y x_m A along dim 2 (c), 3 (h) or 4 (w) of Y (B, G, c, H, W); A is (B or 1, G, I, I).

    Each is one batched matmul: c and w are plain matrix products of contiguous views of the flattened
    map; h moves H ahead of c (one copy of V, which is small) so that it too is one (H, H) @ (H, c W)
    product per head, where broadcasting A over the c channel maps would dispatch B G c tiny H x H
    products (at 7x7 that was 4-8x slower). Its result is a transposed view; the next reshape copies it.
    """
    b, g, c, h, w = y.shape
    attn = attn.to(y.dtype)
    if dim == 2:
        return (attn @ y.reshape(b, g, c, h * w)).reshape(b, g, c, h, w)
    if dim == 4:
        return (y.reshape(b, g, c * h, w) @ attn.transpose(-1, -2)).reshape(b, g, c, h, w)
    rows = y.transpose(2, 3).reshape(b, g, h, c * w)  # (B, G, H, c W)
    return (attn @ rows).reshape(b, g, h, c, w).transpose(2, 3)


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
        # The batch joins the rows, (G, B I, D): each layer is one bmm over the heads with its bias fused,
        # where broadcasting (B, G, I, D) @ (G, D, K) would copy the weights B times and add the bias apart.
        b, g, i, d = x.shape
        rows = x.transpose(0, 1).reshape(g, b * i, d)
        hidden = torch.baddbmm(self.b1, rows, self.w1).relu_()  # (G, B I, K)
        return torch.baddbmm(self.b2, hidden, self.w2).reshape(g, b, i, -1).transpose(0, 1)  # (B, G, I, O)


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
            self.r = None
        else:
            self.p = self.q = None  # plain attributes: TorchScript drops the branch that needs them
            if fixed:
                self.register_buffer("r", torch.randn(heads, size, size, **dd))
            else:
                self.r = nn.Parameter(torch.randn(heads, size, size, **dd))

    def forward(self) -> torch.Tensor:
        if self.p is not None and self.q is not None:
            return (self.p @ self.q.transpose(-1, -2)).unsqueeze(0)
        assert self.r is not None  # for TorchScript's Optional refinement; always true here
        return self.r.unsqueeze(0)


class ModeSynth(nn.Module):
    """Synthesizes the attention of one mode: softmax logits (B or 1, G, I, I), from the mode's slice
    descriptors (dense) and/or learned maps (random)."""

    def __init__(self, mode: str, synth: str, heads: int, head_channels: int, ref_size: int, *,
                 hidden: int, pool_size: int, rank: int, fixed: bool, temperature: float = 1.0,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.mode, self.dim, self.ref_size = mode, MODE_DIMS[mode], ref_size
        self.temperature = temperature
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

    def logits(self, described: dict[str, torch.Tensor], size: int) -> torch.Tensor:
        # `is None` tests on submodules are resolved when TorchScript compiles: one branch per synth.
        if self.random is None:
            assert self.dense is not None
            return fit_columns(self.dense(described[self.mode]), self.ref_size)
        rand = fit_square(self.random(), size)
        if self.dense is None or self.mix_logit is None:
            return rand
        a = torch.sigmoid(self.mix_logit)
        return a * fit_columns(self.dense(described[self.mode]), self.ref_size) + (1 - a) * rand

    def forward(self, described: dict[str, torch.Tensor], size: int) -> torch.Tensor:
        """Softmax of this mode's logits, (B or 1, G, size, size), from STT.describe's descriptors."""
        return softmax_f32(self.logits(described, size), self.temperature)


class STT(nn.Module):
    """Synthesizing Tensor Transformations block: (B, C, H, W) -> (B, C, H, W).

    Z = X + BN(conv1x1(V x_c A_c x_h A_h x_w A_w)),  V = conv1x1(X) split into `heads` groups,
    with each A_m = softmax(L_m / temperature) synthesized per mode. BN's weight starts at zero, so a
    freshly inserted block is the identity.

    Args:
        channels: input (and output) channels C.
        feat_size: reference (H, W) the synthesizers are built for. Other sizes interpolate the
            synthesized maps, unless resize=False, in which case they are an error.
        **options: the block's options, declared in `stt_hf.layers.options.STT_SPEC`:
    """

    def __init__(self, channels: int, *, feat_size: int | Sequence[int] = 14, device=None, dtype=None,
                 **options):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        unknown = sorted(set(options) - set(STT_OPTION_NAMES))
        if unknown:
            raise TypeError(f"STT got unknown option(s) {unknown}; its options are {list(STT_OPTION_NAMES)}")
        if not POSITIVE_INT(channels):
            raise ValueError(f"channels must be {POSITIVE_INT.expected}, got {channels!r}")
        check_stt_options(options)
        opt = resolve(STT_SPEC, options)
        cv = value_channels(channels, opt["reduction"], opt["min_channels"], opt["heads"])
        self.channels, self.modes, self.synth = channels, tuple(dict.fromkeys(opt["modes"])), opt["synth"]
        self.heads, self.temperature, self.resize = opt["heads"], opt["temperature"], opt["resize"]
        self.pool_size = opt["pool_size"]
        self.feat_size = to_pair(feat_size)
        head_channels = cv // self.heads
        ref = {"c": head_channels, "h": self.feat_size[0], "w": self.feat_size[1]}

        self.to_v = nn.Conv2d(channels, cv, 1, bias=False, **dd)
        self.synths = nn.ModuleDict({
            m: ModeSynth(m, self.synth, self.heads, head_channels, ref[m], hidden=opt["hidden"],
                         pool_size=opt["pool_size"], rank=opt["rank"], fixed=opt["fixed"],
                         temperature=self.temperature, **dd)
            for m in self.modes
        })
        self.proj = nn.Conv2d(cv, channels, 1, bias=False, **dd)
        self.norm = nn.BatchNorm2d(channels, **dd)
        nn.init.zeros_(self.norm.weight)  # identity at init: safe to drop into a pretrained net

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> V, (B, G, c, H, W): the reduced value tensor split into heads."""
        b, _, h, w = x.shape
        return conv1x1(x, self.to_v.weight).reshape(b, self.heads, -1, h, w)

    def describe(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """One descriptor per slice along each mode, averages of V (B, G, c, H, W) that keep its structure:
        c: (B, G, c, s*s) each channel map pooled to s x s; h: (B, G, H, c) mean over W;
        w: (B, G, W, c) mean over H. Empty when no synthesizer reads them (random maps)."""
        described: dict[str, torch.Tensor] = {}
        if self.synth in ("dense", "mixture"):
            b, g, c, h, w = v.shape
            s2 = self.pool_size * self.pool_size
            pooled = v.reshape(b, g, c, h * w) @ pool_matrix(h, w, self.pool_size, v)  # (B, G, c, s2 + H + W)
            described["c"] = pooled[..., :s2]
            described["h"] = pooled[..., s2:s2 + h].transpose(-1, -2)
            described["w"] = pooled[..., s2 + h:].transpose(-1, -2)
        return described

    def attention_maps(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """Softmax-normalized attention per mode, (B or 1, G, I_m, I_m), in float32 (float64 if V is)."""
        described = self.describe(v)
        maps: dict[str, torch.Tensor] = {}
        for mode, synth in self.synths.items():
            maps[mode] = synth(described, v.shape[synth.dim])
        return maps

    def transform(self, v: torch.Tensor, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply the maps to V, one mode product per mode: (B, G, c, H, W) -> same shape."""
        y = v
        for mode, synth in self.synths.items():
            y = mode_product(y, maps[mode], synth.dim)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x, self.channels, "STT")
        if not self.resize:
            x = check_size(x, self.feat_size, "STT built with resize=False")
        b, _, h, w = x.shape
        v = self.values(x)
        y = self.transform(v, self.attention_maps(v)).reshape(b, -1, h, w)  # (B, Cv, H, W)
        return self.output(x, y)

    def output(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Z = X + BN(conv1x1(Y)): the block's input (B, C, H, W) and transformed values (B, Cv, H, W)."""
        bias = self.proj.bias
        if bias is not None:  # fused for inference: the BN lives in the projection's weight and bias
            return add_conv1x1(x, y, self.proj.weight, bias)
        if not self.training and isinstance(self.norm, nn.BatchNorm2d):
            # Eval: fold BN into the projection on the fly, a few C-sized ops instead of a pass over
            # the map (on a CPU the BN pass costs about as much as the thin projection itself).
            norm = self.norm
            assert norm.weight is not None and norm.bias is not None  # TorchScript's Optional refinement
            assert norm.running_mean is not None and norm.running_var is not None
            scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
            weight = self.proj.weight * scale.reshape(-1, 1, 1, 1)
            return add_conv1x1(x, y, weight, norm.bias - norm.running_mean * scale)
        # In-place add: one fewer full-size map alive at the peak (BN's backward does not need its output).
        return self.norm(conv1x1(y, self.proj.weight)).add_(x)

    @torch.jit.ignore
    def fuse_for_inference(self) -> "STT":
        """Fold the output BatchNorm into the projection conv (eval mode only); returns self.

        Same outputs (to float rounding). Eval mode already folds on the fly at every call; this does
        it once, so exported graphs and scripted models carry no BatchNorm at all. The state dict
        changes (`proj.bias`, no `norm.*`), so fuse after loading weights, not before saving them.
        """
        check_foldable(self)
        if isinstance(self.norm, nn.BatchNorm2d):
            self.proj = fuse_conv_bn(self.proj, self.norm)
            self.norm = nn.Identity()
        return self

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, modes={''.join(self.modes)}, synth={self.synth}, "
                f"heads={self.heads}, feat_size={self.feat_size}, temperature={self.temperature}")
