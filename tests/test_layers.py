"""The STT operator, its baselines and the attention registry."""

from __future__ import annotations

import functools
import itertools

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, ResNet

from stt_hf.layers import (
    ATTN_FACTORIES,
    MODES,
    STT,
    SYNTHS,
    AxialAttention2d,
    CrissCrossAttention2d,
    FlatSynthesizer,
    SelfAttention2d,
    create_attn,
)
from stt_hf.layers.helpers import add_conv1x1, conv1x1

C, H, W = 32, 6, 5  # channels 32 -> 16 value channels -> 2 heads of 8: every mode has its own size
MODE_SETS = ["".join(s) for r in (1, 2, 3) for s in itertools.combinations(MODES, r)]
INPUT_FREE = ("random", "factorized_random")  # synths whose maps do not depend on the input


def make_stt(synth="dense", modes="chw", channels=C, feat_size=(H, W), **kwargs) -> STT:
    return STT(channels, modes=modes, synth=synth, feat_size=feat_size, **kwargs)


def values(stt: STT, x: torch.Tensor) -> torch.Tensor:
    """V of shape (B, G, c, H, W), as the block computes it."""
    b, _, h, w = x.shape
    return stt.to_v(x).reshape(b, stt.heads, -1, h, w)


def randomize_norm(bn: torch.nn.BatchNorm2d) -> None:
    """Nonzero affine and running statistics, so eval-mode BN is a real per-channel map."""
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.5)
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)


def reference_stt(stt: STT, x: torch.Tensor) -> torch.Tensor:
    """STT written out plainly: 1x1 convs as matmuls and mode-n products as unfold, multiply, fold.

    Uses the module's own attention maps and weights; eval-mode BN from its running statistics.
    """
    b, _, h, w = x.shape
    v = torch.einsum("oc,bchw->bohw", stt.to_v.weight[:, :, 0, 0], x)
    v = v.reshape(b, stt.heads, -1, h, w)
    maps = stt.attention_maps(v)
    y = torch.empty_like(v)
    for i in range(b):
        for g in range(stt.heads):
            t = v[i, g]  # (c, H, W)
            for mode in stt.modes:
                n = "chw".index(mode)
                a = maps[mode][i if maps[mode].shape[0] > 1 else 0, g].to(t.dtype)
                front = t.movedim(n, 0)  # mode n first
                unfolded = front.reshape(front.shape[0], -1)  # mode-n unfolding (I_n, prod of the rest)
                t = (a @ unfolded).reshape(front.shape).movedim(0, n)  # fold back
            y[i, g] = t
    y = y.reshape(b, -1, h, w)
    z = torch.einsum("oc,bchw->bohw", stt.proj.weight[:, :, 0, 0], y)
    bn = stt.norm
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    z = (z - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]
    return x + z


# --------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("synth", SYNTHS)
@pytest.mark.parametrize("modes", MODE_SETS)
def test_shapes_and_maps(modes, synth):
    stt = make_stt(synth, modes)
    x = torch.randn(3, C, H, W)
    out = stt(x)
    assert out.shape == x.shape
    maps = stt.attention_maps(values(stt, x))
    assert list(maps) == list(modes)
    sizes = {"c": 16 // stt.heads, "h": H, "w": W}
    batch = 1 if synth in INPUT_FREE else 3
    for mode, a in maps.items():
        assert a.shape == (batch, stt.heads, sizes[mode], sizes[mode]), mode
        assert a.dtype == torch.float32
        assert (a >= 0).all()
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_heads_and_reduction_set_value_channels(heads):
    stt = STT(64, heads=heads, reduction=4, min_channels=8, feat_size=4)
    assert stt.to_v.out_channels == 16 and stt.proj.in_channels == 16
    maps = stt.attention_maps(values(stt, torch.randn(2, 64, 4, 4)))
    assert maps["c"].shape == (2, heads, 16 // heads, 16 // heads)
    assert STT(8, reduction=4, min_channels=16).to_v.out_channels == 16  # min_channels floor


# --------------------------------------------------------------------------------- identity at init


@pytest.mark.parametrize("synth", SYNTHS)
@pytest.mark.parametrize("train", [True, False])
def test_identity_at_init(synth, train):
    stt = make_stt(synth).train(train)
    x = torch.randn(2, C, H, W)
    assert torch.equal(stt(x), x)


@pytest.mark.parametrize("synth", SYNTHS)
def test_switched_on_is_not_identity(synth, switch_on):
    """The counterpart of the identity test: once the output BN is nonzero the block changes x."""
    stt = switch_on(make_stt(synth))
    x = torch.randn(2, C, H, W)
    assert (stt(x) - x).abs().mean() > 0.1


# ---------------------------------------------------------------------------- the math of the operator


@pytest.mark.parametrize("synth", SYNTHS)
@pytest.mark.parametrize("modes", ["chw", "whc", "hw", "c", "wc"])
@pytest.mark.parametrize("size", [(H, W), (8, 3)], ids=["ref_size", "resized"])
def test_matches_mode_n_unfolding_reference(modes, synth, size):
    stt = make_stt(synth, modes, dtype=torch.float64).eval()
    randomize_norm(stt.norm)
    x = torch.randn(2, C, *size, dtype=torch.float64)
    with torch.no_grad():
        out, ref = stt(x), reference_stt(stt, x)
    assert (ref - x).abs().mean() > 0.1  # the attention path really contributes
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def reference_dense_maps(stt: STT, v: torch.Tensor) -> dict[str, torch.Tensor]:
    """The dense synthesizers written out: descriptors by pooling and means, the MLP per head and row."""
    b, g, c, h, w = v.shape
    described = {"c": F.adaptive_avg_pool2d(v.reshape(b, g * c, h, w), stt.pool_size).reshape(b, g, c, -1),
                 "h": v.mean(dim=-1).transpose(-1, -2), "w": v.mean(dim=-2).transpose(-1, -2)}
    maps = {}
    for mode, synth in stt.synths.items():
        mlp, x = synth.dense, described[mode]
        logits = torch.stack([torch.stack([torch.relu(x[i, k] @ mlp.w1[k] + mlp.b1[k]) @ mlp.w2[k] + mlp.b2[k]
                                           for k in range(g)]) for i in range(b)])
        if logits.shape[-1] != logits.shape[-2]:  # another size: the columns are interpolated
            rows = logits.shape[-2]
            logits = F.interpolate(logits.flatten(0, 1), size=rows, mode="linear").unflatten(0, (b, g))
        maps[mode] = logits.softmax(dim=-1)
    return maps


@pytest.mark.parametrize("size", [(H, W), (8, 3), (7, 7), (14, 14)])
def test_dense_maps_match_their_definition(size):
    """The synthesizers' one-matmul descriptors and fused MLP compute what the definition says."""
    stt = make_stt("dense", "chw", dtype=torch.float64).eval()
    v = stt.values(torch.randn(3, C, *size, dtype=torch.float64))
    maps, ref = stt.attention_maps(v), reference_dense_maps(stt, v)
    for mode in "chw":
        torch.testing.assert_close(maps[mode], ref[mode], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("synth", SYNTHS)
@pytest.mark.parametrize("order", ["".join(p) for p in itertools.permutations("chw")][1:])
def test_mode_products_commute(order, synth, switch_on):
    base = switch_on(make_stt(synth, "chw"))
    permuted = make_stt(synth, order)
    permuted.load_state_dict(base.state_dict())
    assert permuted.modes == tuple(order) and base.modes == ("c", "h", "w")
    x = torch.randn(2, C, H, W)
    out_base, out_perm = base(x), permuted(x)
    assert (out_base - x).abs().mean() > 0.1
    torch.testing.assert_close(out_perm, out_base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("synth", SYNTHS)
def test_temperature_sharpens_maps(synth):
    """A lower temperature is softmax(L / tau) with a smaller tau: the same logits, sharper rows."""
    warm, cold = make_stt(synth, temperature=1.0), make_stt(synth, temperature=0.25)
    cold.load_state_dict(warm.state_dict())
    v = values(warm, torch.randn(2, C, H, W))
    for mode, a in warm.attention_maps(v).items():
        b = cold.attention_maps(v)[mode]
        logits = torch.log(a)
        torch.testing.assert_close(b, torch.softmax(logits / 0.25, dim=-1), rtol=1e-4, atol=1e-5)
        assert b.amax(-1).mean() > a.amax(-1).mean()


@pytest.mark.parametrize("synth", SYNTHS)
def test_maps_input_dependence(synth):
    """random / factorized_random maps are the same for any input; dense and mixture ones are not."""
    stt = make_stt(synth)
    v1, v2 = values(stt, torch.randn(2, C, H, W)), values(stt, 3 * torch.randn(2, C, H, W) + 1)
    m1, m2 = stt.attention_maps(v1), stt.attention_maps(v2)
    for mode in stt.modes:
        if synth in INPUT_FREE:
            assert torch.equal(m1[mode], m2[mode]), mode
        else:
            assert not torch.allclose(m1[mode], m2[mode], atol=1e-4), mode


@pytest.mark.parametrize("synth", ["dense", "mixture"])
def test_dense_maps_are_per_sample(synth):
    stt = make_stt(synth)
    x = torch.randn(2, C, H, W)
    batched = stt.attention_maps(values(stt, x))
    single = stt.attention_maps(values(stt, x[1:]))
    for mode in stt.modes:
        torch.testing.assert_close(batched[mode][1:], single[mode])
        assert not torch.allclose(batched[mode][0], batched[mode][1], atol=1e-4)


# ------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("synth", SYNTHS)
@pytest.mark.parametrize("size", [(H, W), (7, 9)], ids=["ref_size", "resized"])
def test_gradients_reach_every_parameter(synth, size, switch_on):
    stt = switch_on(make_stt(synth))
    x = torch.randn(2, C, *size, requires_grad=True)
    out = stt(x)
    (out * torch.randn_like(out)).sum().backward()  # a plain sum would see no gradient through BN
    names = [n for n, p in stt.named_parameters() if p.requires_grad]
    assert names
    for name, p in stt.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_at_init_only_the_output_norm_gets_gradient():
    """At init (BN weight zero) the block is a true no-op: nothing upstream of the BN gets gradient."""
    stt = make_stt("mixture")
    out = stt(torch.randn(2, C, H, W))
    (out * torch.randn_like(out)).sum().backward()
    assert stt.norm.weight.grad.abs().sum() > 0
    assert stt.to_v.weight.grad.abs().sum() == 0


@pytest.mark.parametrize("synth", ["random", "mixture"])
def test_fixed_random_is_a_frozen_buffer(synth, switch_on):
    stt = switch_on(make_stt(synth, fixed=True))
    buffers = {n: b.clone() for n, b in stt.named_buffers() if n.endswith("random.r")}
    assert sorted(buffers) == sorted(f"synths.{m}.random.r" for m in "chw")
    param_names = {n for n, _ in stt.named_parameters()}
    assert not param_names & set(buffers)
    assert set(buffers) <= set(stt.state_dict())  # saved with the model
    params = {n: p.detach().clone() for n, p in stt.named_parameters()}

    opt = torch.optim.SGD(stt.parameters(), lr=0.5)
    out = stt(torch.randn(2, C, H, W))
    (out * torch.randn_like(out)).sum().backward()
    opt.step()

    for name, before in buffers.items():
        assert torch.equal(stt.get_buffer(name), before), name
    changed = [n for n, p in stt.named_parameters() if not torch.equal(p, params[n])]
    assert "to_v.weight" in changed and "proj.weight" in changed
    if synth == "mixture":
        assert {f"synths.{m}.mix_logit" for m in "chw"} <= set(changed)


def test_learned_random_is_a_parameter():
    stt = make_stt("random")
    assert {f"synths.{m}.random.r" for m in "chw"} <= {n for n, _ in stt.named_parameters()}
    assert not [n for n, _ in stt.named_buffers() if "random" in n]


@pytest.mark.parametrize("synth", SYNTHS)
def test_gradcheck_float64(synth, switch_on):
    """Analytic gradients match finite differences; float64 maps stay float64 (no float32 softmax)."""
    stt = switch_on(STT(16, heads=2, min_channels=8, feat_size=(3, 4), synth=synth, dtype=torch.float64))
    stt.eval()
    x = torch.randn(1, 16, 3, 5, dtype=torch.float64, requires_grad=True)  # width 5 != 4: resized too
    assert all(a.dtype == torch.float64 for a in stt.attention_maps(values(stt, x)).values())
    assert torch.autograd.gradcheck(stt, (x,), eps=1e-6, atol=1e-6, fast_mode=True)


# ---------------------------------------------------------------------------------- numerics, layout


@pytest.mark.parametrize("synth", SYNTHS)
def test_bf16_autocast_close_to_fp32(synth, switch_on):
    stt = switch_on(make_stt(synth)).eval()
    randomize_norm(stt.norm)
    x = torch.randn(2, C, H, W)
    with torch.no_grad():
        ref = stt(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v = values(stt, x)
            maps = stt.attention_maps(v)
            out = stt(x)
    assert v.dtype == torch.bfloat16  # autocast really ran the projections in bf16
    for mode, a in maps.items():
        assert a.dtype == torch.float32, mode
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
    branch, ref_branch = out.float() - x, ref - x
    rel = (branch - ref_branch).norm() / ref_branch.norm()
    assert ref_branch.norm() > 0 and rel < 3e-2, rel


@pytest.mark.parametrize("synth", SYNTHS)
def test_channels_last_same_output(synth, switch_on):
    stt = switch_on(make_stt(synth))
    x = torch.randn(2, C, H, W)
    ref = stt(x)
    out = stt.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- other sizes


@pytest.mark.parametrize("synth", SYNTHS)
@pytest.mark.parametrize("size", [(12, 10), (3, 4), (1, 1)])
def test_other_sizes_interpolate(synth, size, switch_on):
    stt = switch_on(make_stt(synth, feat_size=8))
    x = torch.randn(2, C, *size)
    out = stt(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    maps = stt.attention_maps(values(stt, x))
    assert maps["h"].shape[-2:] == (size[0], size[0])
    assert maps["w"].shape[-2:] == (size[1], size[1])
    for a in maps.values():
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))


def test_resize_false_serves_only_feat_size():
    stt = make_stt(feat_size=(H, W), resize=False)
    assert stt(torch.randn(1, C, H, W)).shape == (1, C, H, W)
    with pytest.raises(ValueError, match=r"resize=False.*feat_size=\(6, 5\).*\(5, 6\)"):
        stt(torch.randn(1, C, W, H))


# ------------------------------------------------------------------------------- compile and export


@pytest.mark.parametrize("backend", [
    "aot_eager",  # Dynamo capture (fullgraph: no graph breaks) and AOTAutograd tracing, in seconds
    pytest.param("inductor", marks=pytest.mark.slow),  # code generation: over a minute on a small CPU
])
def test_torch_compile_fullgraph(backend):
    """One compile, no graph breaks: mixture covers dense + random, width 7 != 5 covers the resize."""
    stt = make_stt("mixture").eval()
    randomize_norm(stt.norm)
    compiled = torch.compile(stt, fullgraph=True, backend=backend)
    x = torch.randn(2, C, H, 7)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), stt(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("synth", ["dense", "factorized_random"])
def test_torch_export(synth):
    stt = make_stt(synth).eval()
    randomize_norm(stt.norm)
    x = torch.randn(2, C, H, W)
    exported = torch.export.export(stt, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), stt(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------- TorchScript, FX (timm's contract)


def traced_forms(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """What timm's model tests hold every model to: scripted, FX-traced, FX-traced then scripted."""
    traced = torch.fx.symbolic_trace(module)
    return {"script": torch.jit.script(module), "fx": traced, "fx_script": torch.jit.script(traced)}


def output_and_grads(fn, x: torch.Tensor, params: list[torch.Tensor], weight: torch.Tensor):
    x = x.clone().requires_grad_()
    out = fn(x)
    return out.detach(), torch.autograd.grad((out * weight).sum(), [x, *params])


# Every synthesizer, a mode subset, the resize=False check, and every entry of the registry.
TRACEABLE = {
    **{f"stt_{s}": functools.partial(make_stt, s) for s in SYNTHS},
    "stt_hw_fixed_size": functools.partial(make_stt, "mixture", "hw", resize=False, fixed=True),
    **{f"registry_{n}": functools.partial(create_attn, n, C, (H, W), heads=2)
       for n in sorted(ATTN_FACTORIES)},
}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", TRACEABLE)
def test_script_and_fx_match_eager_forward_and_backward(name, train, switch_on):
    block = switch_on(TRACEABLE[name]()).train(train)
    if not train:  # eval-mode BN from running statistics (STT folds it into its projection then)
        for bn in (m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            randomize_norm(bn)
    params = [p for p in block.parameters() if p.requires_grad]
    sizes = [(H, W)] if "flat" in name or "fixed_size" in name else [(H, W), (8, 3)]  # (8, 3): resized
    for size in sizes:
        x = torch.randn(2, C, *size)
        weight = torch.randn_like(x)
        ref_out, ref_grads = output_and_grads(block, x, params, weight)
        assert (ref_out - x).abs().mean() > 1e-3  # the attention path contributes
        for form, module in traced_forms(block).items():
            out, grads = output_and_grads(module, x, params, weight)
            torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5, msg=lambda m, f=form: f"{f}: {m}")
            for g, r in zip(grads, ref_grads, strict=True):
                torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5, msg=lambda m, f=form: f"{f}: {m}")


@pytest.mark.parametrize("block", [
    lambda: make_stt(),
    lambda: SelfAttention2d(C),
    lambda: FlatSynthesizer(C, feat_size=(H, W)),
    lambda: AxialAttention2d(C),
    lambda: CrissCrossAttention2d(C),
], ids=["STT", "SelfAttention2d", "FlatSynthesizer", "AxialAttention2d", "CrissCrossAttention2d"])
def test_traced_forms_keep_the_input_checks(block):
    """The checks are FX leaves, not dropped: a traced or scripted block still rejects bad input."""
    block = block()
    name = type(block).__name__
    for form, module in traced_forms(block).items():
        with pytest.raises((ValueError, torch.jit.Error),
                           match=rf"{name} was built for channels=32, got input with 16 channels"):
            module(torch.randn(1, 16, H, W))
        assert module(torch.randn(1, C, H, W)).shape == (1, C, H, W), form


# ------------------------------------------------------------------------------ inference fusion


@pytest.mark.parametrize("name", ["stt_dense", "stt_mixture", "registry_self_attn", "registry_flat_dense",
                                  "registry_axial", "registry_criss_cross"])
def test_fuse_for_inference_is_exact(name, switch_on):
    block = switch_on(TRACEABLE[name]()).eval()
    norms = [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in norms:
        randomize_norm(bn)
    x = torch.randn(2, C, H, W)
    with torch.no_grad():
        ref = block(x)
        assert block.fuse_for_inference() is block
        out = block(x)
    assert (ref - x).abs().mean() > 0.1
    assert not [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_fuse_for_inference_needs_eval_mode():
    with pytest.raises(RuntimeError, match=r"call \.eval\(\) first"):
        make_stt().train().fuse_for_inference()


# ------------------------------------------------------------------------------------ device, dtype


@pytest.mark.parametrize("synth,fixed", [(s, False) for s in SYNTHS] + [("random", True)])
def test_dtype_and_device_kwargs(synth, fixed):
    stt = make_stt(synth, fixed=fixed, dtype=torch.float64)
    floats = [t for t in itertools.chain(stt.parameters(), stt.buffers()) if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float64 for t in floats)
    x = torch.randn(2, C, H, W, dtype=torch.float64)
    assert stt(x).dtype == torch.float64

    meta = make_stt(synth, fixed=fixed, device="meta")
    assert all(t.device.type == "meta" for t in itertools.chain(meta.parameters(), meta.buffers()))


# ------------------------------------------------------------------------------------ timm plug-in


def test_as_timm_block_attn_layer():
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, channels=(32, 64, 128, 256),
                   block_args=dict(attn_layer=functools.partial(STT, feat_size=8)))
    blocks = [model.get_submodule(f"layer{i}.0") for i in range(1, 5)]
    assert all(isinstance(b.se, STT) for b in blocks)
    assert [b.se.channels for b in blocks] == [32, 64, 128, 256]
    assert [b.se.feat_size for b in blocks] == [(8, 8)] * 4
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_timm_create_model_block_args_and_dtype():
    model = timm.create_model("resnet10t", num_classes=5, block_args=dict(attn_layer=STT),
                              dtype=torch.float64)
    stts = [m for m in model.modules() if isinstance(m, STT)]
    assert len(stts) == 4
    assert all(p.dtype == torch.float64 for s in stts for p in s.parameters())  # timm passes dtype
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 5)


def test_timm_create_attn():
    stt = timm.layers.create_attn(STT, 64)
    assert isinstance(stt, STT) and stt.channels == 64
    x = torch.randn(1, 64, 14, 14)
    assert torch.equal(stt(x), x)
    custom = timm.layers.create_attn(STT, 64, synth="random", modes="hw")
    assert custom.synth == "random" and custom.modes == ("h", "w")


# ---------------------------------------------------------------------------------------- baselines


BASELINES = {
    "self_attn": lambda **kw: SelfAttention2d(C, **kw),
    "flat_dense": lambda **kw: FlatSynthesizer(C, synth="dense", feat_size=(H, W), **kw),
    "flat_random": lambda **kw: FlatSynthesizer(C, synth="random", feat_size=(H, W), **kw),
    "axial": lambda **kw: AxialAttention2d(C, **kw),
    "criss_cross": lambda **kw: CrissCrossAttention2d(C, **kw),
    "criss_cross_r1": lambda **kw: CrissCrossAttention2d(C, recurrence=1, **kw),
}


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("heads", [1, 2])
def test_baseline_shapes_identity_and_gradients(name, heads, switch_on):
    block = BASELINES[name](heads=heads)
    x = torch.randn(2, C, H, W)
    assert torch.equal(block(x), x)  # identity at init
    switch_on(block)
    out = block(x)
    assert out.shape == x.shape
    assert (out - x).abs().mean() > 0.1
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_gradcheck_float64(name, switch_on):
    block = switch_on(BASELINES[name](dtype=torch.float64)).eval()
    x = torch.randn(1, C, H, W, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("cls", [SelfAttention2d, AxialAttention2d, CrissCrossAttention2d])
def test_attention_serves_any_size(cls, switch_on):
    block = switch_on(cls(C))
    for size in [(3, 3), (H, W), (9, 4), (1, 7)]:
        assert block(torch.randn(1, C, *size)).shape == (1, C, *size)


@pytest.mark.parametrize("synth", ["dense", "random"])
def test_flat_synthesizer_other_size_raises(synth):
    block = FlatSynthesizer(C, synth=synth, feat_size=(H, W))
    with pytest.raises(ValueError, match=r"FlatSynthesizer serves only feat_size=\(6, 5\).*\(5, 6\)"):
        block(torch.randn(1, C, W, H))


def test_self_attention_matches_plain_softmax_attention(switch_on):
    block = switch_on(SelfAttention2d(C, heads=2)).eval()
    randomize_norm(block.out.norm)
    x = torch.randn(2, C, H, W)
    q, k, v = block.to_qkv(x).flatten(2).chunk(3, dim=1)
    ys = []
    for t in range(2):  # two heads of 8 channels, one at a time
        sl = slice(8 * t, 8 * (t + 1))
        qh, kh, vh = q[:, sl], k[:, sl], v[:, sl]  # (B, 8, N)
        attn = torch.softmax(qh.transpose(1, 2) @ kh / 8**0.5, dim=-1)  # (B, N, N)
        ys.append(vh @ attn.transpose(1, 2))  # (B, 8, N)
    y = torch.cat(ys, 1).reshape(2, -1, H, W)
    torch.testing.assert_close(block(x), x + block.out.norm(block.out.proj(y)), rtol=1e-5, atol=1e-5)


def reference_out(block: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The blocks' output path written out: X + BN(W_out Y), eval-mode BN."""
    bn = block.out.norm
    z = torch.einsum("oc,bchw->bohw", block.out.proj.weight[:, :, 0, 0], y)
    z = (z - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
    return x + z * bn.weight[:, None, None] + bn.bias[:, None, None]


def attend_loop(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, positions) -> torch.Tensor:
    """Dot-product attention one query position at a time: (Cv, H, W) maps, `positions(i, j)` the (row,
    column) pairs position (i, j) attends to; softmax over them of q.k / sqrt(head channels)."""
    out = torch.zeros_like(v)
    c = q.shape[0] // heads
    for g in range(heads):
        sl = slice(g * c, (g + 1) * c)
        for i in range(q.shape[1]):
            for j in range(q.shape[2]):
                keys = positions(i, j)
                logits = torch.stack([q[sl, i, j] @ k[sl, a, b] for a, b in keys]) / c**0.5
                weights = torch.softmax(logits, 0)
                out[sl, i, j] = sum(wt * v[sl, a, b] for wt, (a, b) in zip(weights, keys, strict=True))
    return out


def qkv_of(conv: torch.nn.Conv2d, y: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.einsum("oc,chw->ohw", conv.weight[:, :, 0, 0], y).chunk(3, 0))


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("size", [(H, W), (3, 7)])
def test_axial_attention_matches_loop_reference(heads, size, switch_on):
    """Float64: attention over the column of each position, then over the row of the result."""
    block = switch_on(AxialAttention2d(C, heads=heads, dtype=torch.float64)).eval()
    randomize_norm(block.out.norm)
    x = torch.randn(2, C, *size, dtype=torch.float64)
    ys = []
    for xb in x:
        q, k, v = qkv_of(block.to_qkv_h, xb)
        y = attend_loop(q, k, v, heads, lambda i, j: [(a, j) for a in range(size[0])])  # along H
        q, k, v = qkv_of(block.to_qkv_w, y)
        ys.append(attend_loop(q, k, v, heads, lambda i, j: [(i, b) for b in range(size[1])]))  # along W
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_out(block, x, torch.stack(ys)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("heads,recurrence", [(1, 1), (2, 2), (2, 3)])
@pytest.mark.parametrize("size", [(H, W), (3, 7)])
def test_criss_cross_attention_matches_loop_reference(heads, recurrence, size, switch_on):
    """Float64: Y_0 = W_v X, then Y_{r+1} = Y_r + attention of each position over its column and row
    (itself once), with the one shared q/k/v projection."""
    block = CrissCrossAttention2d(C, heads=heads, recurrence=recurrence, dtype=torch.float64)
    block = switch_on(block).eval()
    randomize_norm(block.out.norm)
    h, w = size

    def criss_cross(i, j):
        return [(a, j) for a in range(h)] + [(i, b) for b in range(w) if b != j]

    x = torch.randn(2, C, *size, dtype=torch.float64)
    ys = []
    for xb in x:
        y = torch.einsum("oc,chw->ohw", block.to_v.weight[:, :, 0, 0], xb)
        for _ in range(recurrence):
            y = y + attend_loop(*qkv_of(block.to_qkv, y), heads, criss_cross)
        ys.append(y)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_out(block, x, torch.stack(ys)), rtol=1e-10, atol=1e-10)


def test_criss_cross_reaches_every_position_in_two_recurrences(switch_on):
    """The reason for R = 2: one step mixes only a position's row and column, two reach the whole map."""
    for recurrence, reached_all in ((1, False), (2, True)):
        block = switch_on(CrissCrossAttention2d(C, recurrence=recurrence, dtype=torch.float64)).eval()
        x = torch.randn(1, C, H, W, dtype=torch.float64, requires_grad=True)
        block(x)[0, :, 0, 0].sum().backward()
        touched = x.grad[0].abs().sum(0) > 0  # (H, W): which inputs output (0, 0) depends on
        assert bool(touched.all()) is reached_all
        assert bool(touched[0].all() and touched[:, 0].all())  # its row and column, always


def test_criss_cross_bad_recurrence_raises():
    with pytest.raises(ValueError, match=r"recurrence must be a positive int for \w+, got 0$"):
        CrissCrossAttention2d(C, recurrence=0)


# ---------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", sorted(ATTN_FACTORIES))
def test_registry_builds_every_attention(name):
    block = create_attn(name, C, (H, W), heads=2, synth="random", unused_option=1)
    x = torch.randn(2, C, H, W)
    out = block(x)
    assert out.shape == x.shape
    if name in ("stt", "self_attn", "axial", "criss_cross", "flat_dense", "flat_random"):
        assert torch.equal(out, x)
    if name == "stt":
        assert isinstance(block, STT) and block.synth == "random" and block.feat_size == (H, W)


@pytest.mark.parametrize("name", ["stt", "self_attn", "axial", "criss_cross", "flat_dense", "se", "gc"])
def test_registry_passes_dtype(name):
    block = create_attn(name, C, (H, W), dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in block.parameters())


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs,match", [
    (dict(modes="chx"), r"modes must be a non-empty subset of \('c', 'h', 'w'\).*got 'chx'"),
    (dict(modes=""), r"modes must be a non-empty subset"),
    (dict(synth="sparse"), r"synth must be one of .*'sparse'"),
    (dict(heads=3), r"heads=3 must divide the value channels.*= 16"),
    (dict(heads=0), r"heads must be a positive int"),
    (dict(fixed=True), r"fixed=True applies to synth='random' or 'mixture'"),
    (dict(temperature=0.0), r"temperature must be a number > 0, got 0.0"),
    (dict(hidden=0), r"hidden must be a positive int"),
    (dict(feat_size=(4, 4, 4)), r"feat_size must be a positive int or an \(H, W\) pair"),
], ids=["unknown_mode", "no_mode", "unknown_synth", "heads_not_dividing", "zero_heads", "fixed_dense",
        "zero_temperature", "zero_hidden", "bad_feat_size"])
def test_stt_bad_construction_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_stt(**kwargs)


@pytest.mark.parametrize("block", [
    lambda: make_stt(),
    lambda: SelfAttention2d(C),
    lambda: FlatSynthesizer(C, feat_size=(H, W)),
    lambda: AxialAttention2d(C),
    lambda: CrissCrossAttention2d(C),
], ids=["STT", "SelfAttention2d", "FlatSynthesizer", "AxialAttention2d", "CrissCrossAttention2d"])
def test_bad_inputs_raise(block):
    block = block()
    name = type(block).__name__
    with pytest.raises(ValueError, match=
                       rf"{name} expects a 4-D input \(B, C, H, W\), got shape \(32, 6, 5\)"):
        block(torch.randn(C, H, W))
    with pytest.raises(ValueError, match=rf"{name} expects a 4-D input"):
        block(torch.randn(1, 1, C, H, W))
    with pytest.raises(ValueError, match=rf"{name} was built for channels=32, got input with 16 channels"):
        block(torch.randn(1, 16, H, W))


@pytest.mark.parametrize("cls,kwargs,match", [
    (SelfAttention2d, dict(heads=3), r"heads=3 must divide the value channels 16"),
    (AxialAttention2d, dict(heads=3), r"heads=3 must divide the value channels 16"),
    (CrissCrossAttention2d, dict(heads=3), r"heads=3 must divide the value channels 16"),
    (FlatSynthesizer, dict(heads=3, feat_size=4), r"heads=3 must divide the value channels 16"),
    (FlatSynthesizer, dict(synth="mixture"), r"synth must be 'dense' or 'random'.*'mixture'"),
])
def test_baseline_bad_construction_raises(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(C, **kwargs)


def test_registry_unknown_name_raises():
    with pytest.raises(ValueError, match=r"attn_layer must be one of .*'stt'.*got 'non_local'"):
        create_attn("non_local", C, (H, W))


# ------------------------------------------------------------------------------------------- conv1x1


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv1x1_matches_conv2d_forward_and_backward(layout, with_bias):
    """The block's 1x1 projections (a batched matmul on NCHW maps) are exactly F.conv2d."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(3, 12, 5, 7, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    weight = torch.randn(20, 12, 1, 1, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(20, dtype=torch.float64, requires_grad=True) if with_bias else None
    out = conv1x1(x, weight, bias)
    grads = torch.autograd.grad(out.square().sum(), [x, weight] + ([bias] if with_bias else []))
    ref = F.conv2d(x, weight, bias)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, weight] + ([bias] if with_bias else []))
    assert out.shape == (3, 20, 5, 7)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_add_conv1x1_matches_residual_plus_conv2d(layout):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64).contiguous(memory_format=fmt)
    residual = torch.randn(2, 9, 4, 5, dtype=torch.float64).contiguous(memory_format=fmt)
    weight, bias = torch.randn(9, 6, 1, 1, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    kept = residual.clone()
    inputs = [t.requires_grad_() for t in (residual, x, weight, bias)]
    out = add_conv1x1(residual, x, weight, bias)
    expected = residual + F.conv2d(x, weight, bias)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert residual.shape == out.shape and not out.data_ptr() == residual.data_ptr()
    assert torch.equal(residual.detach(), kept)  # the input is kept
    # The matmul accumulates in place into a new tensor: gradients still reach every input.
    grad = torch.randn_like(out)
    got, want = torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, inputs, grad)
    for name, g, e in zip(("residual", "x", "weight", "bias"), got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
