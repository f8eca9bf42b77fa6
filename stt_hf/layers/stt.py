"""STT: Synthesizing Tensor Transformations, a self-attention plug-in for CNN feature maps.

The feature map stays a 3rd-order tensor (C x H x W). For each chosen mode (channel, height,
width) a small synthesizer produces one attention matrix, and the matrices are applied with mode-n
products. There is no query-key dot product and the map is never flattened to a sequence.

The paper (arXiv 2201.01410) publishes no equations; this module is the project's reconstruction,
described in docs/operator.md.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from .helpers import (
    add_conv1x1,
    cast_like,
    check_foldable,
    check_input,
    check_size,
    conv1x1,
    fuse_conv_bn,
    softmax_f32,
    to_pair,
    value_channels,
)
from .options import POSITIVE_INT, STT_OPTION_NAMES, STT_SPEC, check_stt_options, resolve

MODE_DIMS = {"c": 2, "h": 3, "w": 4}  # the dim of each mode in V of shape (B, G, c, H, W)

# FX leaves where this module calls them (torch.fx.wrap patches the caller's globals).
for _leaf in ("add_conv1x1", "cast_like", "check_input", "check_size", "conv1x1", "softmax_f32"):
    torch.fx.wrap(_leaf)


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

    Every synthesizer's descriptor then comes from one matmul over V instead of a pooling op and two
    small mean reductions per block. Each part is separable, a Kronecker product of 1-D pools, so the
    matrix is cheap to build.
    """
    eye_h = torch.eye(h, dtype=like.dtype, device=like.device)
    eye_w = torch.eye(w, dtype=like.dtype, device=like.device)
    pooled = torch.kron(pool_1d(h, size, like), pool_1d(w, size, like))  # (H W, size^2)
    row_means = torch.kron(eye_h, pool_1d(w, 1, like))  # (H W, H)
    column_means = torch.kron(pool_1d(h, 1, like), eye_w)  # (H W, W)
    return torch.cat([pooled, row_means, column_means], dim=1)


@register_notrace_function
@torch.fx.wrap
def descriptor_pool(v: torch.Tensor, cached: torch.Tensor, ref_size: tuple[int, int],
                    size: int) -> torch.Tensor:
    """pool_matrix for V's (H, W) in V's dtype: the block's cached one at its reference size, else built."""
    h, w = v.shape[-2], v.shape[-1]
    pool = cached if h == ref_size[0] and w == ref_size[1] else pool_matrix(h, w, size, cached)
    return pool if pool.dtype == v.dtype else pool.to(v.dtype)


def mode_product(y: torch.Tensor, attn: torch.Tensor, dim: int) -> torch.Tensor:
    """Y x_m A along dim 2 (c), 3 (h) or 4 (w) of Y (B, G, c, H, W); A is (B or 1, G, I, I).

    Each is one batched matmul: c and w are plain matrix products of contiguous views of the flattened
    map; h moves H ahead of c (one copy of V, which is small) so that it too is one (H, H) @ (H, c W)
    product per head, where broadcasting A over the c channel maps would dispatch B G c tiny H x H
    products. Its result is a transposed view; the next reshape copies it.
    """
    b, g, c, h, w = y.shape
    attn = cast_like(attn, y)  # float32 maps on bf16/fp16 values
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
        self.b1 = nn.Parameter(torch.empty(heads, 1, hidden, **dd))
        self.w2 = nn.Parameter(torch.empty(heads, hidden, out_dim, **dd))
        self.b2 = nn.Parameter(torch.empty(heads, 1, out_dim, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.w1, std=self.w1.shape[1] ** -0.5)
        nn.init.zeros_(self.b1)
        nn.init.normal_(self.w2, std=self.w2.shape[1] ** -0.5)
        nn.init.zeros_(self.b2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The batch joins the rows, (G, B I, D): each layer is one bmm over the heads with its bias fused,
        # where broadcasting (B, G, I, D) @ (G, D, K) would copy the weights B times and add the bias apart.
        b, g, i, d = x.shape
        rows = x.transpose(0, 1).reshape(g, b * i, d)
        hidden = torch.baddbmm(self.b1, rows, self.w1).relu_()  # (G, B I, K)
        out = self.w2.shape[-1]
        return torch.baddbmm(self.b2, hidden, self.w2).reshape(g, b, i, out).transpose(0, 1)  # (B, G, I, O)


class RandomSynth(nn.Module):
    """Input-independent logits R of shape (1, G, I, I): learned, fixed (a buffer) or factorized P Q^T."""

    def __init__(self, heads: int, size: int, *, fixed: bool = False, rank: int | None = None,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.factorized = rank is not None
        if self.factorized:
            self.p = nn.Parameter(torch.empty(heads, size, rank, **dd))
            self.q = nn.Parameter(torch.empty(heads, size, rank, **dd))
            self.r = None
        else:
            self.p = self.q = None  # plain attributes: TorchScript drops the branch that needs them
            if fixed:
                self.register_buffer("r", torch.empty(heads, size, size, **dd))
            else:
                self.r = nn.Parameter(torch.empty(heads, size, size, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Standard normal maps; P scaled by rank^-1/2, so P Q^T has unit variance too."""
        if self.p is not None and self.q is not None:
            nn.init.normal_(self.p, std=self.p.shape[-1] ** -0.5)
            nn.init.normal_(self.q)
        if self.r is not None:
            nn.init.normal_(self.r)

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
            self.mix_logit = nn.Parameter(torch.empty(1, heads, 1, 1, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.mix_logit is not None:
            nn.init.zeros_(self.mix_logit)

    def logits(self, described: dict[str, torch.Tensor], size: int, mix: torch.Tensor | None = None
               ) -> torch.Tensor:
        """This mode's logits; `mix` is sigmoid(mix_logit) for a mixture (STT computes all modes' at once)."""
        # `is None` tests on submodules are resolved when TorchScript compiles: one branch per synth.
        if self.random is None:
            assert self.dense is not None
            return fit_columns(self.dense(described[self.mode]), self.ref_size)
        rand = fit_square(self.random(), size)
        if self.dense is None or self.mix_logit is None:
            return rand
        if mix is None:
            mix = torch.sigmoid(self.mix_logit)
        dense = fit_columns(self.dense(described[self.mode]), self.ref_size)
        # a * dense + (1 - a) * rand as one op. lerp does not promote dtypes: under autocast the dense
        # logits are bf16/fp16, the blend weight float32.
        return torch.lerp(cast_like(rand, mix), cast_like(dense, mix), mix)

    def forward(self, described: dict[str, torch.Tensor], size: int, mix: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Softmax of this mode's logits, (B or 1, G, size, size), from STT.describe's descriptors."""
        return softmax_f32(self.logits(described, size, mix), self.temperature)


class STT(nn.Module):
    """Synthesizing Tensor Transformations block: (B, C, H, W) -> (B, C, H, W).

    Z = X + BN(conv1x1(V x_c A_c x_h A_h x_w A_w)),  V = conv1x1(X) split into `heads` groups,
    with each A_m = softmax(L_m / temperature) synthesized per mode. BN's weight starts at zero, so a
    freshly inserted block is the identity.

    Args:
        channels: input (and output) channels C.
        feat_size: reference (H, W) the synthesizers are built for. Other sizes interpolate the
            synthesized maps, unless resize=False, in which case they are an error.
        **options: the block's options, declared in `stt_hf.layers.options.STT_SPEC`
            (`tests/test_layers_options.py` checks this list against it):
            modes (default 'chw'): which modes of the (C, H, W) map get an attention matrix, e.g.
                'hw'.
            synth (default 'dense'): 'dense' (from the input), 'random' (learned,
                input-independent), 'factorized_random' (low-rank P Q^T) or 'mixture' (learned blend of
                dense and random).
            heads (default 2): groups the value channels are split into, each with its own
                attention; must divide them.
            reduction (default 2): value channels Cv = max(C // reduction, min_channels).
            min_channels (default 16): the floor of the value channels Cv.
            hidden (default 32): hidden width of the dense synthesizer MLP.
            pool_size (default 4): the channel-mode descriptor pools each channel map to pool_size
                x pool_size.
            rank (default 8): rank k of the factorized random maps.
            temperature (default 1.0): softmax temperature tau.
            resize (default True): other input sizes interpolate the synthesized maps; False makes
                them an error.
            fixed (default False): random maps are a non-trained buffer (Tay et al.'s 'fixed
                random'); synth 'random' or 'mixture'.
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
        # The descriptors' pooling matrix at the reference size, built once (14 small ops per call
        # otherwise). Not persistent: it derives from the sizes alone, so checkpoints do not carry it.
        self.register_buffer("descriptor_pool", None, persistent=False)
        if self.synth in ("dense", "mixture"):
            self.descriptor_pool = torch.empty(0, **dd)
            self.init_non_persistent_buffers()
        self.proj = nn.Conv2d(cv, channels, 1, bias=False, **dd)
        self.norm = nn.BatchNorm2d(channels, **dd)
        self.zero_init_last()

    def zero_init_last(self) -> None:
        """Zero the output BN's weight: the block is the identity, safe to drop into a pretrained net
        (timm's residual blocks have the same method)."""
        if isinstance(self.norm, nn.BatchNorm2d):  # not yet folded by fuse_for_inference
            nn.init.zeros_(self.norm.weight)

    def _apply(self, fn, recurse=True):
        # .to(dtype), .half(), .cuda(), .to_empty(): rebuild the cached pooling matrix in its new dtype and
        # place rather than converting it (a float32 1/14 cast to float64 is not float64's 1/14).
        super()._apply(fn, recurse)
        self.init_non_persistent_buffers()
        return self

    @torch.jit.ignore
    def init_non_persistent_buffers(self) -> None:
        """(Re)build the buffers that no checkpoint carries, where they already live (device and dtype).

        A loader that builds the model on the meta device and then fills in only the state dict (as
        transformers' from_pretrained does) must call this: `SttPreTrainedModel._init_weights` does.
        """
        if self.descriptor_pool is not None:
            with torch.no_grad():
                self.descriptor_pool = pool_matrix(*self.feat_size, self.pool_size, self.descriptor_pool)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> V, (B, G, c, H, W): the reduced value tensor split into heads."""
        b, _, h, w = x.shape
        cv = self.to_v.weight.shape[0]  # explicit sizes, not -1: an empty batch reshapes too
        return conv1x1(x, self.to_v.weight).reshape(b, self.heads, cv // self.heads, h, w)

    def describe(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """One descriptor per slice along each mode, averages of V (B, G, c, H, W) that keep its structure:
        c: (B, G, c, s*s) each channel map pooled to s x s; h: (B, G, H, c) mean over W;
        w: (B, G, W, c) mean over H. Empty when no synthesizer reads them (random maps)."""
        described: dict[str, torch.Tensor] = {}
        if self.descriptor_pool is not None:  # dense and mixture
            b, g, c, h, w = v.shape
            s2 = self.pool_size * self.pool_size
            pool = descriptor_pool(v, self.descriptor_pool, self.feat_size, self.pool_size)
            pooled = v.reshape(b, g, c, h * w) @ pool  # (B, G, c, s2 + H + W)
            described["c"] = pooled[..., :s2]
            described["h"] = pooled[..., s2:s2 + h].transpose(-1, -2)
            described["w"] = pooled[..., s2 + h:].transpose(-1, -2)
        return described

    def attention_maps(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """Softmax-normalized attention per mode, (B or 1, G, I_m, I_m), in float32 (float64 if V is)."""
        described = self.describe(v)
        mix_logits: list[torch.Tensor] = []
        for synth in self.synths.values():
            if synth.mix_logit is not None:
                mix_logits.append(synth.mix_logit)
        mixture = self.synth == "mixture"  # every mode blends, in the order of self.synths
        # One op (one multi-tensor kernel on a GPU) for every mode's blend weight, not one per mode.
        mixes = torch._foreach_sigmoid(mix_logits) if mixture else mix_logits
        maps: dict[str, torch.Tensor] = {}
        i = 0
        for mode, synth in self.synths.items():
            mix: torch.Tensor | None = None
            if mixture:
                mix = mixes[i]
            maps[mode] = synth(described, v.shape[synth.dim], mix)
            i += 1
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
        cv = v.shape[1] * v.shape[2]
        y = self.transform(v, self.attention_maps(v)).reshape(b, cv, h, w)  # (B, Cv, H, W)
        return self.output(x, y)

    def output(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Z = X + BN(conv1x1(Y)): the block's input (B, C, H, W) and transformed values (B, Cv, H, W)."""
        bias = self.proj.bias
        if bias is not None:  # fused for inference: the BN lives in the projection's weight and bias
            return add_conv1x1(x, y, self.proj.weight, bias)
        # Eval mode runs BN as it is, one op: folding it into the projection at every call took five
        # more (scale, weight, shift), each a kernel launch on a GPU. fuse_for_inference() folds it once.
        z = self.norm(conv1x1(y, self.proj.weight))
        if self.training:
            # In-place: one fewer full-size map alive at the peak (BN's backward does not need its output).
            return z.add_(x)
        return x + z  # in x's dtype under autocast, as the fused path gives

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


