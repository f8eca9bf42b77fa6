"""Checks and small operations shared by STT and its baselines.

The input checks and the size-dependent branches are FX leaves (`torch.fx.wrap` for
`torch.fx.symbolic_trace`, `register_notrace_function` for timm's feature extraction): FX cannot
branch on a traced shape, and as leaves they still run, with their clear errors, when the traced
graph runs. Everything here is TorchScript-compatible, so scripted models keep the checks too.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn


def to_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """An (H, W) pair of positive sizes from an int or a pair; anything else is an error (timm's
    to_2tuple passes it)."""
    pair = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"feat_size must be a positive int or an (H, W) pair of them, got {size}")
    return pair


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
def cast_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """x in like's dtype; x itself, with no op dispatched, when it already is (a leaf: FX cannot compare
    dtypes)."""
    return x if x.dtype == like.dtype else x.to(like.dtype)


@register_notrace_function
@torch.fx.wrap
def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 convolution (B, Cin, H, W) -> (B, Cout, H, W) with a (Cout, Cin, 1, 1) weight.

    A contiguous (NCHW) map goes through one batched matmul, W @ X over the flattened map: on a CPU,
    oneDNN reorders an NCHW map to a blocked layout and back around a 1x1 conv, which for the thin
    convs of STT's projections costs more than the product itself (docs/implementation-notes.md).
    Other layouts (channels_last, where oneDNN's conv needs no reorder) keep F.conv2d.
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
    return y.reshape(b, weight.shape[0], h, w)


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
    cout = weight.shape[0]
    out = (residual + bias.to(dtype).reshape(-1, 1, 1)).reshape(b, cout, h * w)  # (B, Cout, HW), a new tensor
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


__all__ = ["add_conv1x1", "cast_like", "check_foldable", "check_input", "check_size", "conv1x1",
           "fuse_conv_bn", "softmax_f32", "to_pair", "value_channels"]
