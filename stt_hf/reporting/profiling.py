"""Parameter and multiply-accumulate counts, computed without running real arithmetic."""

from __future__ import annotations

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, baddbmm_flop


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# In-place matmuls of the eval path (add_conv1x1's baddbmm_), which torch's counter does not know, counted
# with torch's own formula (`__wrapped__`: before its shape wrapper, which the counter applies again).
IN_PLACE_FLOPS = {torch.ops.aten.baddbmm_: baddbmm_flop.__wrapped__}


def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """Multiply-accumulates of one forward pass (torch's FLOP counter / 2), per batch."""
    device = next(model.parameters()).device
    x = torch.zeros(batch_size, *input_size, device=device)
    # Eval mode: a train-mode pass would update BatchNorm's running statistics.
    # (no torch.no_grad: the counter's module tracker needs autograd to see parameter outputs)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=IN_PLACE_FLOPS) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def model_complexity(name: str, **kwargs) -> dict:
    """Params and GMACs of a timm model at its default input size, built on the meta device."""
    model = timm.create_model(name, device="meta", **kwargs).eval()
    input_size = model.pretrained_cfg["input_size"]
    return dict(model=name, input_size=input_size, params_m=count_params(model) / 1e6,
                gmacs=count_macs(model, input_size) / 1e9)


# What the op count leaves out: ops that only make a new view of a tensor or allocate an uninitialised
# one (no arithmetic, no kernel of their own). A reshape that must copy counts as a reshape.
VIEW_OPS = frozenset(f"aten::{name}" for name in (
    "view", "_unsafe_view", "reshape", "_reshape_alias", "permute", "expand", "expand_as", "transpose", "t",
    "unsqueeze", "squeeze", "flatten", "unflatten", "as_strided", "slice", "select", "split", "chunk",
    "unbind", "narrow", "alias", "detach", "lift_fresh", "view_as", "empty", "empty_like", "empty_strided",
))


def count_aten_ops(fn, *args) -> list[str]:
    """The top-level ATen ops one call of `fn(*args)` runs on a CPU, views and empty allocations left out.

    Top level: an `aten::` event of torch.profiler whose parent is not itself an ATen op (so `matmul`
    counts once, not again for the `bmm` it calls). Returns the op names in call order.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(*args)
    ops = []
    for event in prof.events():
        parent = event.cpu_parent
        if (event.name.startswith("aten::") and event.name not in VIEW_OPS
                and not (parent is not None and parent.name.startswith("aten::"))):
            ops.append(event.name)
    return ops
