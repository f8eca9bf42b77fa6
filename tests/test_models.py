"""The stt_* timm model zoo, swept the way timm's own tests sweep its models."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config
from timm.layers import get_attn
from timm.models.resnet import BasicBlock, Bottleneck

import stt_hf  # noqa: F401  (registers the stt_* models with timm)
from stt_hf.layers import (
    ATTN_FACTORIES,
    STT,
    AxialAttention2d,
    CrissCrossAttention2d,
    FlatSynthesizer,
    SelfAttention2d,
)
from stt_hf.layers.create import EcaModule
from stt_hf.models import SttResNet
from stt_hf.models.plugin import PLUGGED_MODELS, attention_modules, find_stages
from stt_hf.models.stt_resnet import MODEL_ARGS

MODEL_NAMES = timm.list_models("stt_*")
# The sweep stays cheap on a CPU: batch 2 only for the cheapest models, 48 px for the deepest.
CHEAP = ("stt_resnet10_s", "stt_resnet18", "stt_resnet26", "stt_resnet34")
DEEP = ("stt_resnet101", "stt_resnet152")
ATTN_TYPES = {
    "stt": STT, "self_attn": SelfAttention2d, "flat_dense": FlatSynthesizer, "flat_random": FlatSynthesizer,
    "axial": AxialAttention2d, "criss_cross": CrissCrossAttention2d,
    "res_block": Bottleneck,  # the capacity control: a plain residual block, no attention
    **{name: get_attn(name) for name in ("se", "cbam", "gc")},  # timm's own classes
    "eca": EcaModule,  # timm's ECA with views that also take an empty batch
}


@pytest.fixture(autouse=True)
def _flush_denormal():
    """Deep nets with every branch switched on push some values (softmax tails, gradients) into the
    float32 denormal range, which the CPU computes up to 100x slower; flushing them to zero changes
    nothing these tests compare (below 1e-38) and keeps the sweep fast."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)  # the default (torch has no getter to restore from)


def cfg_size(name: str) -> int:
    return timm.models.get_pretrained_cfg(name).input_size[-1]


def input_px(name: str) -> int:
    """Small inputs: 32 px for the _s (32 px) family, 64 px for the ImageNet family (48 for the deepest)."""
    if cfg_size(name) <= 32:
        return 32
    return 48 if name in DEEP else 64


def batch_size(name: str) -> int:
    return 2 if name in CHEAP else 1


def small_input(name: str) -> torch.Tensor:
    return torch.randn(batch_size(name), 3, input_px(name), input_px(name))


def create(name: str, **kwargs) -> torch.nn.Module:
    """The registered model, every residual branch live: timm's ResNets take zero_init_last=False (the
    plugged families build their trunk as timm does)."""
    if name in MODEL_ARGS:
        kwargs.setdefault("zero_init_last", False)
    return timm.create_model(name, **kwargs)


def attn_prefixes(model) -> tuple[str, ...]:
    return tuple(f"{a}." for a in model.attn_names)


def has_head_conv(model) -> bool:
    """Whether the head adds a layer after the last stage (EfficientNet's conv_head), so the last
    feature map is not what the classifier pools."""
    return model.num_features != model.feature_info[-1]["num_chs"]


def expected_synth(name: str) -> str:
    return next((s for s in ("random", "mixture") if name.endswith(s)), "dense")


def record_attention_calls(model: SttResNet) -> list[tuple[str, tuple[int, ...]]]:
    """(name, input shape) of every attention module call, in call order.

    A pre-hook, not a forward hook: checkpoint recomputation may stop inside the module once it has
    what backward needs, so a forward hook would miss calls.
    """
    calls = []
    for name, module in attention_modules(model):
        module.register_forward_pre_hook(
            lambda m, args, name=name: calls.append((name, tuple(args[0].shape))))
    return calls


def randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Every BN a real per-channel map (also the zero-init ones), so no residual branch is dead."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module", params=MODEL_NAMES)
def eval_model(request):
    """One eval-mode model per name, shared by the read-only tests (pytest groups them by name)."""
    torch.manual_seed(0)
    return request.param, timm.create_model(request.param).eval()


def test_zoo_is_registered():
    assert {"stt_resnet10_s", "stt_resnet18", "stt_resnet50", "stt_resnet152"} <= set(MODEL_NAMES)
    for name in MODEL_NAMES:
        assert timm.is_model(name)
        assert timm.models.get_pretrained_cfg(name) is not None, name


# ------------------------------------------------------------------------------------ the sweep


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_forward_backward(name, switch_on):
    """Forward and backward at a small size; with every residual branch and attention switched on,
    every parameter (attention included) gets a nonzero gradient."""
    model = switch_on(create(name))
    calls = record_attention_calls(model)
    x = small_input(name)
    out = model(x)
    assert out.shape == (x.shape[0], model.num_classes)
    assert torch.isfinite(out).all()
    assert [c[0] for c in calls] == model.attn_names and calls  # every placed module runs, in order
    (out * torch.randn_like(out)).sum().backward()
    num_params = sum(p.numel() for p in model.parameters())
    num_grad = sum(p.grad.numel() for p in model.parameters() if p.grad is not None)
    assert num_grad == num_params
    for pname, p in model.named_parameters():
        if pname.startswith(attn_prefixes(model)):
            assert p.grad.abs().sum() > 0, f"zero gradient for {pname}"
    stts = [m for _, m in attention_modules(model)]
    assert all(isinstance(m, STT) and m.synth == expected_synth(name) for m in stts)


def output_and_grads(fn, x: torch.Tensor, params: list[torch.Tensor], weight: torch.Tensor):
    x = x.clone().requires_grad_()
    out = fn(x)
    return out.detach(), torch.autograd.grad((out * weight).sum(), [x, *params])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_torchscript_and_fx(name, switch_on):
    """timm's contract: scripted, FX-traced and FX-traced-then-scripted, each forward and backward,
    give the eager outputs and gradients.

    Gradients are compared for the input (the whole backward chain) and every attention parameter
    plus the stem conv: checking all 60M parameters of the deepest nets three times would cost
    minutes and test torch's own conv backward, not this package.
    """
    # Training mode: batch statistics keep the deep nets' activations (and softmax gradients) in range.
    model = switch_on(create(name))
    first_conv = model.pretrained_cfg["first_conv"] + ".weight"
    named = [(n, p) for n, p in model.named_parameters()
             if n.startswith(attn_prefixes(model)) or n == first_conv]
    params = [p for _, p in named]
    x = small_input(name)
    weight = torch.randn(x.shape[0], model.num_classes)
    ref_out, ref_grads = output_and_grads(model, x, params, weight)
    for (pname, _), g in zip(named, ref_grads[1:], strict=True):
        assert g.abs().sum() > 0, f"zero gradient for {pname}"
    traced = torch.fx.symbolic_trace(model)
    for form, module in (("script", torch.jit.script(model)), ("fx", traced),
                         ("fx_script", torch.jit.script(traced))):
        out, grads = output_and_grads(module, x, params, weight)
        torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4, msg=lambda m, f=form: f"{f}: {m}")
        for pname, g, r in zip(["x", *(n for n, _ in named)], grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-4 * r.abs().max().item(),
                                       msg=lambda m, f=form, p=pname: f"{f}, grad of {p}: {m}")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_features_only_fx(name, switch_on):
    """timm's FX feature extraction (`feature_cls="fx"`, what torchvision's create_feature_extractor
    does) gives forward_intermediates' maps, and backward reaches every parameter it keeps."""
    torch.manual_seed(0)
    model = switch_on(create(name))  # training mode: see above
    torch.manual_seed(0)  # the same weights: both are built from the same random state
    features = switch_on(create(name, features_only=True, feature_cls="fx"))
    assert isinstance(features, timm.models.FeatureGraphNet)
    x = small_input(name).requires_grad_()
    outs = features(x)
    with torch.no_grad():
        refs = model.forward_intermediates(x, intermediates_only=True)
    assert len(outs) == len(refs) == len(model.feature_info)
    for out, ref in zip(outs, refs, strict=True):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    sum((out * torch.randn_like(out)).sum() for out in outs).backward()
    assert x.grad.abs().sum() > 0
    for pname, p in features.named_parameters():
        assert p.grad is not None, pname
        if pname.removeprefix("graph_module.").startswith(attn_prefixes(model)):
            assert p.grad.abs().sum() > 0, pname  # the attention modules are in the graph


def test_model_fuse_for_inference(switch_on):
    model = randomize_bn(switch_on(timm.create_model("stt_resnet18_s_mixture", zero_init_last=False,
                                                     attn_placement="block"))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert model.fuse_for_inference() is model
        out = model(x)
    for _, module in model.attention_modules():
        assert isinstance(module.norm, torch.nn.Identity) and module.proj.bias is not None
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.jit.script(model)  # the fused model keeps timm's contract
    torch.fx.symbolic_trace(model)
    with pytest.raises(RuntimeError, match="eval"):
        timm.create_model("stt_resnet10_s").train().fuse_for_inference()


def test_model_default_cfg(eval_model):
    name, model = eval_model
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == name
    assert cfg["num_classes"] == model.num_classes
    assert not cfg.get("fixed_input_size", False)
    in_chans, height, width = cfg["input_size"]
    last = model.feature_info[-1]
    assert model.num_features == model.head_hidden_size
    assert has_head_conv(model) or model.num_features == last["num_chs"]
    assert tuple(cfg["pool_size"]) == (height // last["reduction"], width // last["reduction"])

    classifier = model.get_submodule(cfg["classifier"])
    assert classifier is model.get_classifier()
    assert isinstance(classifier, torch.nn.Linear)
    assert classifier.weight.shape == (model.num_classes, model.num_features)
    first_conv = model.get_submodule(cfg["first_conv"])
    assert isinstance(first_conv, torch.nn.Conv2d) and first_conv.in_channels == in_chans

    data_cfg = resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == cfg["input_size"]
    assert data_cfg["mean"] == cfg["mean"] and data_cfg["std"] == cfg["std"]
    image = Image.new("RGB", (width + 13, height + 7), color=(120, 30, 200))
    for is_training in (False, True):
        tensor = create_transform(**data_cfg, is_training=is_training)(image)
        assert tuple(tensor.shape) == tuple(cfg["input_size"])


def test_model_registered_placement(eval_model):
    """The defaults the ablation chose: `_s` models one STT block after the last stage; the 224 px
    family one in every residual block of stages 3 and 4."""
    name, model = eval_model
    if name in PLUGGED_MODELS:  # the places its table names, one module per slot or stage
        assert model.attention_spec["places"] == PLUGGED_MODELS[name]["attention"]["places"]
        assert len(model.attn_names) >= len(model.attention_spec["places"])
    elif "_s" in name:
        assert model.attn_names == [f"layer4.{len(model.layer4) - 1}"]
    else:
        assert model.attn_names == [f"layer{s}.{i}.se" for s in (3, 4)
                                    for i in range(len(model.get_submodule(f"layer{s}")))]


def test_model_attention_built_for_cfg_input_size(eval_model):
    name, model = eval_model
    size = cfg_size(name)
    assert tuple(getattr(model, "img_size", None) or model.attention_spec["img_size"]) == (size, size)
    stage_names = [stage.name for stage in find_stages(model)] if name in PLUGGED_MODELS else None
    for attn_name, module in attention_modules(model):
        if stage_names is None:
            stage = int(attn_name[len("layer")])
        else:  # the stage whose module holds it
            stage = next(i for i, n in enumerate(stage_names) if attn_name.startswith(f"{n}."))
        info = model.feature_info[stage]
        in_block_slot = stage_names is not None and not isinstance(
            model.get_submodule(attn_name.rpartition(".")[0]), (torch.nn.Sequential, torch.nn.ModuleList))
        if not in_block_slot:  # a plugged block's slot sits inside it, at its own width
            assert module.channels == info["num_chs"]
        assert module.feat_size == (math.ceil(size / info["reduction"]),) * 2


def test_model_forward_intermediates(eval_model):
    name, model = eval_model
    x = small_input(name)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
    assert len(inter) == len(model.feature_info)
    for t, info in zip(inter, model.feature_info, strict=True):
        assert t.shape[1] == info["num_chs"], info
        assert t.shape[-2:] == (math.ceil(x.shape[-2] / info["reduction"]),) * 2, info
    if x.shape[-1] == cfg_size(name):  # the pool_size the cfg promises is what the model gives
        assert final.shape[-2:] == model.pretrained_cfg["pool_size"]
    if not has_head_conv(model):
        torch.testing.assert_close(inter[-1], final)
    if name in CHEAP:  # consistency with forward_features and the index options: a few models suffice
        with torch.no_grad():
            features = model.forward_features(x)
            only = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True, stop_early=True)
        torch.testing.assert_close(final, features)
        assert len(only) == 2
        torch.testing.assert_close(only[0], inter[1])
        torch.testing.assert_close(only[1], inter[3])


def test_model_features_only(eval_model):
    name, base = eval_model
    model = timm.create_model(name, features_only=True).eval()
    reference = base.feature_info
    assert model.feature_info.channels() == [f["num_chs"] for f in reference]
    assert model.feature_info.reduction() == [f["reduction"] for f in reference]
    if name not in CHEAP:  # forward shapes of the others: test_model_forward_intermediates
        return
    x = small_input(name)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == 5
    for t, chs, red in zip(outs, model.feature_info.channels(), model.feature_info.reduction(), strict=True):
        assert t.shape == (x.shape[0], chs, *(math.ceil(s / red) for s in x.shape[-2:]))

    if name == "stt_resnet10_s":  # out_indices: once is enough
        subset = timm.create_model(name, features_only=True, out_indices=(2, 4)).eval()
        assert subset.feature_info.channels() == [reference[2]["num_chs"], reference[4]["num_chs"]]
        with torch.no_grad():
            assert [t.shape[1] for t in subset(x)] == subset.feature_info.channels()


def test_model_num_classes_zero_and_reset_classifier(eval_model):
    name, model = eval_model
    model = copy.deepcopy(model)  # the shared model keeps its head
    x = small_input(name)
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (x.shape[0], model.num_features)
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), torch.nn.Identity) and model.num_classes == 0
        torch.testing.assert_close(model.forward_head(features), pre_logits)
        if name in CHEAP:  # the whole forward, not only the head: a few models suffice
            torch.testing.assert_close(model(x), pre_logits)
        model.reset_classifier(7)
        assert model.forward_head(features).shape == (x.shape[0], 7)
    if name == "stt_resnet10_s":  # num_classes=0 at construction: once is enough
        headless = timm.create_model(name, num_classes=0).eval()
        with torch.no_grad():
            assert headless(x).shape == (x.shape[0], headless.num_features)


# ---------------------------------------------------------------------- training-side features


@pytest.mark.parametrize("name,kwargs", [
    ("stt_resnet10_s", {}),
    ("stt_resnet18_s_mixture", dict(attn_placement="stage", attn_stages=(2, 4))),
    ("stt_resnet26", dict(attn_placement="final", stt_synth="random", stt_modes="hw")),
])
def test_grad_checkpointing_same_gradients(name, kwargs, switch_on):
    model = randomize_bn(switch_on(timm.create_model(name, zero_init_last=False, **kwargs)))
    calls = record_attention_calls(model)
    x = small_input(name)
    target = torch.randn(x.shape[0], model.num_classes)

    def grads():
        model.zero_grad(set_to_none=True)
        out = model(x)
        (out * target).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    out_ref, ref = grads()
    plain_calls = len(calls)
    model.set_grad_checkpointing(True)
    calls.clear()
    out_ckpt, ckpt = grads()
    assert len(calls) == 2 * plain_calls  # the attention modules really were recomputed in backward
    torch.testing.assert_close(out_ckpt, out_ref, rtol=1e-5, atol=1e-5)
    assert ref.keys() == ckpt.keys()
    for n in ref:
        torch.testing.assert_close(ckpt[n], ref[n], rtol=1e-4, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("name,kwargs", [
    ("stt_resnet10_s", {}),
    ("stt_resnet18", dict(attn_placement="stage")),
    ("stt_resnet26", dict(stt_synth="mixture")),
])
def test_channels_last_same_output(name, kwargs, switch_on):
    model = randomize_bn(switch_on(timm.create_model(name, zero_init_last=False, **kwargs))).eval()
    x = small_input(name)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    scale = ref.abs().max().item()
    assert scale > 1e-3
    # Whole deep nets with every branch switched on: float32 rounding grows with depth, so compare
    # relative to the output scale (the STT layer alone is checked at 1e-5 in test_layers).
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile(backend, switch_on):
    model = randomize_bn(switch_on(timm.create_model("stt_resnet10_s", zero_init_last=False))).eval()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,size", [
    ("stt_resnet10_s", (24, 24)),
    ("stt_resnet10_s", (40, 36)),
    ("stt_resnet18", (80, 72)),
    ("stt_resnet26", (48, 48)),
    ("stt_resnet18_s_random", (64, 64)),
])
def test_variable_input_size(name, size, switch_on):
    model = switch_on(timm.create_model(name, zero_init_last=False)).eval()
    calls = record_attention_calls(model)
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()
    modules = dict(model.attention_modules())
    assert len(calls) == len(modules)
    assert any(tuple(shape[-2:]) != modules[n].feat_size for n, shape in calls)  # the resize path ran


@pytest.mark.parametrize("name", ["stt_resnet10_s", "stt_resnet18"])
def test_in_chans_1(name):
    model = timm.create_model(name, in_chans=1).eval()
    assert model.get_submodule(model.pretrained_cfg["first_conv"]).in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, input_px(name), input_px(name))).shape == (2, model.num_classes)


@pytest.mark.parametrize("name", ["stt_resnet10_s", "stt_resnet26"])
def test_drop_path_and_drop_rate(name):
    model = timm.create_model(name, drop_path_rate=0.2, drop_rate=0.3)
    assert model.drop_rate == 0.3
    drop_paths = [m for m in model.modules() if isinstance(m, timm.layers.DropPath)]
    assert drop_paths and max(m.drop_prob for m in drop_paths) == pytest.approx(0.2, abs=0.05)
    x = small_input(name)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))  # stochastic in training
        model.eval()
        torch.testing.assert_close(model(x), model(x))


# ------------------------------------------------------------------------ options by keyword


def test_stt_options_by_keyword():
    model = timm.create_model("stt_resnet10_s", stt_synth="factorized_random", stt_modes="wh", stt_heads=4,
                              stt_reduction=4, stt_hidden=8, stt_rank=2, stt_temperature=0.5)
    modules = [m for _, m in model.attention_modules()]
    assert len(modules) == 1  # `_s` default: one block after the last stage
    for module, chs in zip(modules, (256,), strict=True):
        assert isinstance(module, STT)
        assert (module.synth, module.modes, module.heads, module.temperature) == (
            "factorized_random", ("w", "h"), 4, 0.5)
        assert module.to_v.out_channels == chs // 4
        assert module.synths["h"].random.p.shape == (4, module.feat_size[0], 2)

    fixed = timm.create_model("stt_resnet10_s", stt_synth="random", stt_fixed=True, stt_resize=False)
    for _, module in fixed.attention_modules():
        assert not module.resize
        assert not [n for n, _ in module.named_parameters() if "random" in n]
    with pytest.raises(ValueError, match="resize=False"):
        fixed(torch.randn(1, 3, 40, 40))


@pytest.mark.parametrize("placement,stages,expected", [
    ("block", (1, 2), ["layer1.0.se", "layer2.0.se"]),
    ("block", (3, 4), ["layer3.0.se", "layer4.0.se"]),
    ("stage", (2, 4), ["layer2.1", "layer4.1"]),
    ("stage", (1, 2, 3, 4), ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]),
    ("final", (1, 2), ["layer4.1"]),
])
def test_attn_placement_and_stages(placement, stages, expected, switch_on):
    model = switch_on(timm.create_model("stt_resnet10_s", attn_placement=placement, attn_stages=stages,
                                        zero_init_last=False)).eval()
    assert model.attn_names == expected
    sizes = {1: 32, 2: 16, 3: 8, 4: 4}  # the _s stem keeps 32 px at stage 1
    for attn_name, module in model.attention_modules():
        assert isinstance(module, STT)
        assert module.feat_size == (sizes[int(attn_name[5])],) * 2
    for stage in range(1, 5):  # no attention module anywhere else
        layer = model.get_submodule(f"layer{stage}")
        block_attn = [f"layer{stage}.{i}.se" for i, b in enumerate(layer)
                      if getattr(b, "se", None) is not None]
        extra = [f"layer{stage}.{i}" for i, b in enumerate(layer) if isinstance(b, STT)]
        assert sorted(block_attn + extra) == sorted(n for n in expected if n.startswith(f"layer{stage}."))
    calls = record_attention_calls(model)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert [(n, s[-2:]) for n, s in calls] == [(n, (sizes[int(n[5])],) * 2) for n in expected]


@pytest.mark.parametrize("attn_layer", sorted(ATTN_FACTORIES))
def test_attn_layer_baselines(attn_layer):
    model = timm.create_model("stt_resnet10_s", attn_layer=attn_layer)
    modules = [m for _, m in model.attention_modules()]
    assert len(modules) == 1 and all(type(m) is ATTN_TYPES[attn_layer] for m in modules)
    assert bool(model.pretrained_cfg.get("fixed_input_size", False)) == attn_layer.startswith("flat_")
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    traced = torch.fx.symbolic_trace(model)  # timm's contract holds for every attn_layer too
    for form, module in (("script", torch.jit.script(model)), ("fx", traced),
                         ("fx_script", torch.jit.script(traced))):
        torch.testing.assert_close(module(x), model(x), rtol=1e-4, atol=1e-4,
                                   msg=lambda m, f=form: f"{f}: {m}")


@pytest.mark.parametrize("attn_layer", sorted(ATTN_FACTORIES))
def test_every_attn_layer_trains_inside_the_blocks(attn_layer, switch_on):
    """Block placement: the host block adds its shortcut to the module's output in place (timm's
    `x += shortcut`), which autograd refuses on a tensor the module's backward saved."""
    model = switch_on(timm.create_model("stt_resnet10_s", attn_layer=attn_layer, attn_placement="block",
                                        attn_stages=(3, 4), zero_init_last=False))
    assert model.attn_names == ["layer3.0.se", "layer4.0.se"]
    for _, module in model.attention_modules():  # the control's zero-init output BN is its bn3
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                torch.nn.init.ones_(bn.weight)
    out = model(torch.randn(2, 3, 32, 32))
    (out * torch.randn_like(out)).sum().backward()
    for name, module in model.attention_modules():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name


def test_flat_attention_is_tied_to_its_input_size():
    model = timm.create_model("stt_resnet18", attn_layer="flat_random")
    assert model.pretrained_cfg["fixed_input_size"] is True
    assert [m.feat_size for _, m in model.attention_modules()] == [(14, 14)] * 2 + [(7, 7)] * 2
    with pytest.raises(ValueError, match=r"FlatSynthesizer serves only feat_size=\(14, 14\)"):
        model(torch.randn(1, 3, 64, 64))
    small = timm.create_model("stt_resnet18", attn_layer="flat_dense", img_size=64)
    assert small.pretrained_cfg["fixed_input_size"] is True
    assert small(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


def test_no_attention_is_plain_resnet():
    """attn_layer "none" (timm.create_model drops None keyword arguments) or None builds no attention."""
    for model in (timm.create_model("stt_resnet10_s", attn_layer="none"),
                  SttResNet(BasicBlock, (1, 1, 1, 1), attn_layer=None, small_input=True, img_size=32)):
        assert model.attn_names == [] and not model.attention_modules()
        assert not [m for m in model.modules() if isinstance(m, (STT, SelfAttention2d, FlatSynthesizer))]
        assert all(getattr(b, "se", None) is None for b in model.modules() if isinstance(b, BasicBlock))
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_classes)


def test_dtype_reaches_attention_modules():
    model = timm.create_model("stt_resnet10_s", dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("kwargs,match", [
    (dict(attn_layer="non_local"), r"attn_layer must be .*one of .*got 'non_local'"),
    (dict(attn_placement="mid"), r"attn_placement must be one of \('block', 'stage', 'final'\), got 'mid'"),
    (dict(attn_stages=(0, 3)), r"attn_stages must be stage numbers in 1..4: .*, got \(0, 3\)"),
    (dict(attn_stages=(5,)), r"attn_stages must be stage numbers in 1..4"),
    (dict(stt_synth="sparse"), r"synth must be one of .*'sparse'"),
    (dict(stt_modes="hwz"), r"modes must be a non-empty subset"),
    (dict(stt_heads=3), r"stt_heads does not fit the STT block of stage 4 .*heads=3 must divide the value "
                        r"channels"),
], ids=["attn_layer", "attn_placement", "attn_stages_0", "attn_stages_5", "stt_synth", "stt_modes",
        "stt_heads"])
def test_create_model_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model("stt_resnet10_s", **kwargs)


# ------------------------------------------------------------------------------- pretrained loading


@pytest.fixture(scope="module")
def plain_resnet18(tmp_path_factory):
    """A plain timm resnet18 with random (nonzero everywhere) weights, saved as safetensors."""
    torch.manual_seed(1)
    model = randomize_bn(timm.create_model("resnet18")).eval()
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    save_file(model.state_dict(), str(path))
    return model, path


def load_stt_resnet18(path, **kwargs) -> SttResNet:
    return timm.create_model("stt_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                             **kwargs).eval()


@pytest.mark.parametrize("placement", ["block", "stage", "final"])
def test_pretrained_plain_resnet_loads_and_matches(placement, plain_resnet18, switch_on):
    plain, path = plain_resnet18
    model = load_stt_resnet18(path, attn_placement=placement)
    own = model.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(own[key], value), key
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = plain(x)
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-6)
        switch_on(model)  # the comparison above can fail: a nonzero attention branch changes the output
        assert not torch.allclose(model(x), ref, atol=1e-3)


def test_pretrained_stt_checkpoint_roundtrip(tmp_path, switch_on):
    """A checkpoint that has attention weights loads them; the filter only fills in missing ones."""
    trained = randomize_bn(switch_on(timm.create_model("stt_resnet18", attn_placement="stage"))).eval()
    path = tmp_path / "stt_resnet18.safetensors"
    save_file(trained.state_dict(), str(path))
    model = load_stt_resnet18(path, attn_placement="stage")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("edit,match", [
    (lambda sd: sd.__setitem__("layer1.0.conv1.weight", torch.zeros(64, 64, 1, 1)),
     r"size mismatch for layer1\.0\.conv1\.weight"),
    (lambda sd: sd.__setitem__("layer3.0.se.to_v.weight", torch.zeros(8, 256, 1, 1)),
     r"size mismatch for layer3\.0\.se\.to_v\.weight"),
    (lambda sd: sd.pop("layer2.1.bn2.weight"), r"Missing key.*layer2\.1\.bn2\.weight"),
], ids=["trunk_shape", "attention_shape", "missing_trunk_key"])
def test_pretrained_bad_checkpoint_raises(edit, match, plain_resnet18, tmp_path):
    state_dict = dict(plain_resnet18[0].state_dict())
    edit(state_dict)
    path = tmp_path / "bad.safetensors"
    save_file(state_dict, str(path))
    with pytest.raises(RuntimeError, match=match):
        load_stt_resnet18(path)


def test_count_macs_leaves_model_state_alone():
    from stt_hf.reporting.profiling import count_macs

    model = timm.create_model("stt_resnet10_s", num_classes=10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert count_macs(model, (3, 32, 32)) > 0
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"count_macs changed {key}"


def test_count_macs_counts_the_eval_path_like_the_training_path(switch_on):
    """Eval mode runs the output projection as an in-place matmul (add_conv1x1): still counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from stt_hf.reporting.profiling import count_macs

    block = switch_on(STT(64, feat_size=8, reduction=4)).train()
    with FlopCounterMode(display=False) as counter:
        block(torch.randn(1, 64, 8, 8))
    assert count_macs(block, (64, 8, 8)) == counter.get_total_flops() // 2 > 2 * 64 * 16 * 64
