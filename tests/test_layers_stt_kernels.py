"""The STT block's kernel economy: the same operator as before, in fewer ops.

`tests/stt_reference.py` is the block as it was before its ops were batched and folded (45 ops per
eval forward of a stage-3 block of stt_resnet50); these tests hold the current block to its outputs,
gradients and state-dict keys, and to the op budget.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from stt_reference import STT as ReferenceSTT

from stt_hf.layers import MODES, STT, SYNTHS
from stt_hf.reporting.profiling import count_aten_ops

C, H, W = 32, 6, 5  # 16 value channels in 2 heads of 8: every mode has its own size
MODE_SETS = ["".join(s) for r in (1, 2, 3) for s in itertools.combinations(MODES, r)]
MAX_OPS_PER_BLOCK = 25  # eval forward, any synthesizer (the budget; 45 before for dense)


def randomize(block: torch.nn.Module, seed: int) -> None:
    """Every parameter and BN statistic random (BN weight nonzero: the attention path counts)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        block.norm.running_mean.copy_(torch.randn(C, generator=gen) * 0.5)
        block.norm.running_var.copy_(torch.rand(C, generator=gen) + 0.5)


def pair(synth: str, modes: str, **kwargs) -> tuple[ReferenceSTT, STT]:
    """The frozen reference block and the current one, with the same (random) weights."""
    ref = ReferenceSTT(C, feat_size=(H, W), synth=synth, modes=modes, **kwargs)
    randomize(ref, seed=len(modes) + SYNTHS.index(synth))
    new = STT(C, feat_size=(H, W), synth=synth, modes=modes, **kwargs)
    new.load_state_dict(ref.state_dict(), strict=True)
    return ref, new


def run(block: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor):
    x = x.clone().requires_grad_()
    out = block(x)
    params = [p for p in block.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * weight).sum(), [x, *params])
    return out.detach(), grads


def assert_same(out, ref, dtype, what):
    """float64: within 1e-5 (both compute the same function; the differences are rounding, ~1e-13).
    float32: within 1e-5 relative, and 1e-5 of the tensor's largest magnitude (a gradient entry summed
    over many terms of size ~10 carries rounding of that order, whichever way it is summed)."""
    scale = 1.0 if dtype == torch.float64 else max(1.0, ref.abs().max().item())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * scale, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("modes", MODE_SETS)
@pytest.mark.parametrize("synth", SYNTHS)
def test_same_outputs_and_gradients_as_the_reference(synth, modes, layout, train):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for dtype in (torch.float64, torch.float32):
        ref, new = pair(synth, modes)
        ref.to(dtype).train(train), new.to(dtype).train(train)
        gen = torch.Generator().manual_seed(7)
        # The reference size, and (float64) one the maps are resized to.
        for size in [(H, W), (8, 3)] if dtype == torch.float64 else [(H, W)]:
            x = torch.randn(2, C, *size, generator=gen, dtype=dtype).to(memory_format=fmt)
            weight = torch.randn(x.shape, generator=gen, dtype=dtype)
            ref_out, ref_grads = run(ref, x, weight)
            out, grads = run(new, x, weight)
            assert (ref_out - x).abs().mean() > 0.05  # the attention path contributes
            assert_same(out, ref_out, dtype, f"{dtype} output")
            names = ["input", *(n for n, p in new.named_parameters() if p.requires_grad)]
            for name, g, r in zip(names, grads, ref_grads, strict=True):
                assert_same(g, r, dtype, f"{dtype} grad of {name}")
        # Training updates the same BN statistics.
        assert_same(new.norm.running_mean, ref.norm.running_mean, dtype, "running_mean")
        assert_same(new.norm.running_var, ref.norm.running_var, dtype, "running_var")


@pytest.mark.parametrize("kwargs", [dict(synth=s) for s in SYNTHS] + [
    dict(synth="mixture", fixed=True), dict(synth="random", fixed=True, modes="hw"), dict(temperature=0.5)])
def test_state_dict_keys_unchanged(kwargs):
    """Checkpoints saved before load as they were: same keys, shapes and dtypes, nothing new saved."""
    ref = ReferenceSTT(C, feat_size=(H, W), **kwargs).state_dict()
    new = STT(C, feat_size=(H, W), **kwargs).state_dict()
    assert list(new) == list(ref)
    assert all(new[k].shape == ref[k].shape and new[k].dtype == ref[k].dtype for k in ref)


def test_fused_block_matches_reference():
    """fuse_for_inference() gives the reference's eval outputs too."""
    ref, new = pair("mixture", "chw")
    ref.eval(), new.eval()
    x = torch.randn(2, C, H, W)
    with torch.no_grad():
        torch.testing.assert_close(new.fuse_for_inference()(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_bf16_autocast_matches_reference(train):
    """Same output dtype under autocast (eval: the input's; train: the branch's) and values."""
    ref, new = pair("mixture", "chw")
    ref.train(train), new.train(train)
    x = torch.randn(2, C, H, W)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref_out = new(x), ref(x)
    assert out.dtype == ref_out.dtype
    torch.testing.assert_close(out.float(), ref_out.float(), rtol=2e-2, atol=5e-2)


def block_ops(synth: str, train: bool) -> list[str]:
    """Ops of one forward of a stage-3 stt_resnet50-sized block (C 256 here; the count does not
    depend on C), batch 2, 14 x 14."""
    block = STT(256, feat_size=14, synth=synth).train(train)
    x = torch.randn(2, 256, 14, 14)
    with torch.set_grad_enabled(train):
        block(x)  # warm-up: first-call work is not the steady state
        return count_aten_ops(block, x)


@pytest.mark.parametrize("synth", SYNTHS)
def test_eval_forward_op_budget(synth):
    ops = block_ops(synth, train=False)
    assert len(ops) <= MAX_OPS_PER_BLOCK, ops
    # Where the budget went: no per-call construction of constants, no dtype casts in float32.
    assert not {"aten::eye", "aten::kron", "aten::to", "aten::contiguous"} & set(ops), ops


def test_descriptor_pool_rebuilt_after_meta_loading():
    """A block built on the meta device and materialized rebuilds the cached pooling matrix it does not
    save (transformers' loader calls init_non_persistent_buffers; test_hf_modeling loads checkpoints)."""
    block = STT(C, feat_size=(H, W)).eval()
    meta = STT(C, feat_size=(H, W), device="meta").to_empty(device="cpu").eval()  # rebuilt here
    meta.load_state_dict(block.state_dict())
    assert torch.equal(meta.descriptor_pool, block.descriptor_pool)
    x = torch.randn(1, C, H, W)
    with torch.no_grad():
        torch.testing.assert_close(meta(x), block(x), rtol=0, atol=0)
    # Converted, it is rebuilt in the new dtype rather than rounded from float32.
    built = STT(C, feat_size=(H, W), dtype=torch.float64)
    assert torch.equal(block.double().descriptor_pool, built.descriptor_pool)
