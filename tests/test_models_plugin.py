"""`add_attention` on timm CNNs of every supported family: one sweep, then the bad inputs.

Each family is a small real timm model at a small input size; its "pretrained" weights come from a
local safetensors file, so identity at init is checked on a model loaded as a user loads one.
"""

from __future__ import annotations

import copy
import json

import pytest
import timm
import torch
from model_helpers import same_weights, switched_on
from safetensors.torch import load_file, save_file

import stt_hf  # noqa: F401  (registers the stt_* models with timm)
from stt_hf.layers import STT
from stt_hf.models.plugin import (
    PlacementError,
    add_attention,
    attention_modules,
    fill_attention_keys,
    find_stages,
)

PX = 64  # small inputs keep the sweep cheap; the modules are built for this size
# family -> (timm name, places). Each family gets `after` on its last stage and, where its blocks have an
# empty attention slot, `block` on another stage.
FAMILIES = {
    "resnet_d": ("resnet10t", {2: "block", 4: "after"}),
    "convnext": ("convnext_atto", {2: "after", 3: "after"}),
    "efficientnet": ("efficientnet_lite0", {3: "block", 4: "after"}),
    "efficientnet_se": ("tinynet_e", {4: "after"}),  # its blocks' se slots hold SE: after only
    "regnet_x": ("regnetx_002", {3: "block", 4: "after"}),
    "regnet_y": ("regnety_002", {4: "after"}),
    "mobilenetv3": ("mobilenetv3_small_050", {2: "block", 4: "after"}),
    "byobnet": ("gernet_s", {2: "block", 3: "after"}),
}
SMALL = dict(reduction=4, min_channels=8)  # STT options for the narrow test models


def trunk(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained_cfg_overlay=dict(input_size=(3, PX, PX)), **kwargs)


@pytest.fixture(scope="module")
def pretrained_files(tmp_path_factory) -> dict[str, str]:
    """A safetensors checkpoint of each family's trunk, with trained-looking BN statistics."""
    folder = tmp_path_factory.mktemp("trunks")
    files = {}
    for family, (name, _) in FAMILIES.items():
        model = trunk(name)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        files[family] = str(folder / f"{family}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, files[family])
    return files


def loaded(name: str, path: str, **kwargs) -> torch.nn.Module:
    """The family's trunk with its weights read from `path` (timm's own local-file loader)."""
    return timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=path, input_size=(3, PX, PX), num_classes=1000),
        **kwargs,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_family_sweep(family, pretrained_files, tmp_path):
    name, places = FAMILIES[family]
    path = pretrained_files[family]
    x = torch.randn(2, 3, PX, PX)

    # Identity at init, with the weights a user loads: exactly the same outputs.
    model = loaded(name, path).eval()
    with torch.no_grad():
        reference = model(x)
    trunk_keys = set(model.state_dict())
    assert add_attention(model, places, **SMALL) is model
    with torch.no_grad():
        assert torch.equal(model(x), reference)
    assert model.attn_names and all(isinstance(m, STT) for _, m in attention_modules(model))

    # Trunk keys unchanged; the trunk checkpoint loads strictly, the new keys aside.
    new_keys = set(model.state_dict()) - trunk_keys
    assert trunk_keys <= set(model.state_dict())
    assert new_keys and all(k.startswith(tuple(f"{n}." for n in model.attn_names)) for k in new_keys)
    model.load_state_dict(fill_attention_keys(load_file(path), model), strict=True)

    # Channels and feature size came from the model: each module was built for what reaches it.
    seen = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, n=n: seen.update({n: args[0].shape}))
        for n, m in attention_modules(model)
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    for attn_name, module in attention_modules(model):
        assert (module.channels, *module.feat_size) == tuple(seen[attn_name][1:]), attn_name

    # Forward and backward: with the attention switched on, every added parameter learns.
    switched_on(model).train()
    out = model(x)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in model.named_parameters():
        if pname.startswith(tuple(f"{n}." for n in model.attn_names)):
            assert p.grad is not None and p.grad.abs().sum() > 0, pname
    model.eval()

    # timm's API: features and head, intermediates (which run every added module), reset_classifier,
    # gradient checkpointing.
    calls = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, n=n: calls.append(n))
        for n, m in attention_modules(model)
    ]
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), logits)
        calls.clear()
        inter = model.forward_intermediates(x, intermediates_only=True)
    for hook in hooks:
        hook.remove()
    assert sorted(calls) == sorted(model.attn_names)
    assert [t.shape[1] for t in inter] == [i["num_chs"] for i in model.feature_info]
    train_copy = copy.deepcopy(model).train()
    with torch.no_grad():
        plain_out = train_copy(x)
        train_copy.set_grad_checkpointing(True)
        torch.testing.assert_close(train_copy(x), plain_out, rtol=1e-5, atol=1e-5)
    train_copy.reset_classifier(0)
    with torch.no_grad():
        assert train_copy(x).shape == (
            2,
            getattr(train_copy, "head_hidden_size", None) or train_copy.num_features,
        )

    # Save and reload: the spec is plain JSON and rebuilds the same model; the weights load strictly.
    spec = json.loads(json.dumps(model.attention_spec))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "stt.safetensors")
    rebuilt = add_attention(trunk(name), **spec)
    rebuilt.load_state_dict(load_file(tmp_path / "stt.safetensors"), strict=True)
    rebuilt.eval()
    assert rebuilt.attn_names == model.attn_names and rebuilt.attention_spec == spec
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), logits, rtol=1e-5, atol=1e-5)

    # features_only: the same call on timm's feature extractor of the family.
    features_model = trunk(name, features_only=True).eval()
    with torch.no_grad():
        before = features_model(x)
        add_attention(features_model, places, **SMALL)
        after = features_model(x)
    assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(after, before, strict=True))

    # Bad input: errors name what exists, and the model is left as it was.
    plain = trunk(name)
    keys = set(plain.state_dict())
    last_stage = max(places)
    for bad, match in (
        (dict(places={99: "after"}, **SMALL), "no stage 99; its stages are 0 "),
        (dict(places={last_stage: "after"}, heads=7), "heads=7 must divide"),
    ):
        with pytest.raises(PlacementError, match=match):
            add_attention(plain, **bad)
        assert set(plain.state_dict()) == keys and "attn_names" not in vars(plain)


SCRIPTED_BY_DEFAULT = ("resnet_d", "convnext")  # the others with --runslow: scripting takes long on a CPU


@pytest.mark.parametrize(
    "family", [f if f in SCRIPTED_BY_DEFAULT else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES]
)
def test_family_scripts_and_fx_traces(family):
    """timm scripts and FX-traces each of these families; with the attention added, so does the model."""
    name, places = FAMILIES[family]
    model = switched_on(add_attention(trunk(name), places, **SMALL)).eval()
    x = torch.randn(2, 3, PX, PX)
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), logits, rtol=1e-4, atol=1e-4)


def test_position_the_family_lacks_names_what_it_offers():
    model = trunk("convnext_atto")
    with pytest.raises(
        PlacementError,
        match=r"does not take position 'block'.*no attention slot.*"
        r"3 \(stages\.3: after\)",
    ):
        add_attention(model, {3: "block"})
    regnety = trunk("regnety_002")  # every block already has SE in its slot
    with pytest.raises(PlacementError, match=r"no empty attention slot \(b1\.se holds SEModule"):
        add_attention(regnety, {1: "block"})
    regnetx = trunk("regnetx_002")  # its stem ends in a conv with weights, not a block list
    with pytest.raises(PlacementError, match=r"Stage 0 \(stem\).*ConvNormAct has its own weights"):
        add_attention(regnetx, {0: "after"})
    assert "attn_names" not in vars(regnetx) and "attn_names" not in vars(regnety)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(places={3: "beside"}), r"position in \('after', 'block'\)"),
        (dict(places={}), "places is empty"),
        (dict(places={3: "after"}, attn_layer="transformer"), "attn_layer must be one of"),
        (dict(places={3: "after"}, hedas=2), r"Unknown attention option\(s\) \['hedas'\]"),
        (dict(places={3: "after"}, synth="dense", fixed=True), "fixed=True applies to"),
        (dict(places={3: "after"}, img_size=(0, 32)), "img_size must be"),
    ],
)
def test_bad_places_and_options_raise_before_any_change(kwargs, match):
    model = trunk("convnext_atto")
    keys = set(model.state_dict())
    with pytest.raises(PlacementError, match=match):
        add_attention(model, **kwargs)
    assert set(model.state_dict()) == keys


def test_model_without_stages_raises():
    plain_cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    with pytest.raises(PlacementError, match="No stages found in Sequential.*feature_info.*encoder.stages"):
        add_attention(plain_cnn, {0: "after"})


def test_second_call_raises():
    model = add_attention(trunk("convnext_atto"), {3: "after"})
    with pytest.raises(PlacementError, match="already has attention added"):
        add_attention(model, {2: "after"})


@pytest.mark.parametrize("attn_layer", ["se", "eca", "cbam", "gc", "self_attn", "res_block", "flat_dense"])
def test_any_attention_module_of_the_package(attn_layer):
    model = trunk("resnet10t").eval()
    x = torch.randn(1, 3, PX, PX)
    with torch.no_grad():
        reference = model(x)
        add_attention(model, {3: "block", 4: "after"}, attn_layer=attn_layer)
        out = model(x)
    assert len(model.attn_names) == 2
    if attn_layer in ("res_block", "flat_dense", "self_attn"):  # zero-init output: the identity
        assert torch.equal(out, reference)
    switched_on(model).train()
    model(torch.randn(2, 3, PX, PX)).sum().backward()


def test_find_stages_lists_positions():
    stages = find_stages(trunk("resnet10t"))
    assert [s.name for s in stages] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert [s.positions() for s in stages] == [["after"]] + [["after", "block"]] * 4


def test_options_change_the_module():
    model = add_attention(trunk("convnext_atto"), {3: "after"}, options={"heads": 4}, synth="random")
    ((_, module),) = attention_modules(model)
    assert module.heads == 4 and module.synth == "random"
    assert model.attention_spec["options"] == {"heads": 4, "synth": "random"}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_exports_to_onnx(family, tmp_path):
    import onnxruntime

    name, places = FAMILIES[family]
    model = switched_on(add_attention(trunk(name), places, **SMALL)).eval()
    x = torch.randn(2, 3, PX, PX)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"])
    (out,) = onnxruntime.InferenceSession(str(path)).run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-4)


OTHER_FAMILIES = (
    "nf_resnet26",
    "ghostnet_050",
    "mixnet_s",
    "lcnet_050",
    "efficientnetv2_rw_t",
    "fbnetv3_b",
    "rexnet_100",
    "resnest14d",
    "res2net50_14w_8s",
    "seresnet18",
    "regnetz_005",
    "convnextv2_atto",
    "fastvit_t8",
    "hgnetv2_b0",
    "ese_vovnet19b_dw",
    "rdnet_tiny",
    "edgenext_xx_small",
    "starnet_s1",
    "inception_next_atto",
    "efficientvit_b0",
    "mambaout_femto",
    "resnetv2_50",
    "vgg11",
    "repvgg_a0",
    "mobileone_s0",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", OTHER_FAMILIES)
def test_other_families(name):
    """Families with no code of their own here: every place find_stages offers, the identity at init."""
    model = trunk(name).eval()
    places = {s.index: s.positions() for s in find_stages(model) if s.positions()}
    x = torch.randn(1, 3, PX, PX)
    keys = set(model.state_dict())
    with torch.no_grad():
        reference = model(x)
        add_attention(model, places, **SMALL)
        assert torch.equal(model(x), reference)
    assert keys <= set(model.state_dict()) and len(model.attn_names) >= len(places)


@pytest.mark.parametrize(
    "name,trunk_name",
    [("stt_convnext_atto", "convnext_atto"), ("stt_efficientnet_lite0", "efficientnet_lite0")],
)
def test_registered_pretrained_loads_the_trunk_weights_at_identity(name, trunk_name, tmp_path):
    """pretrained=True reads the plain trunk's checkpoint (its cfg names the trunk's ImageNet weights;
    a local file stands in for the download): the outputs are the plain model's, and a saved STT
    checkpoint loads back through the same route."""
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.hf_hub_id == f"timm/{trunk_name}.{timm.models.get_pretrained_cfg(trunk_name).tag}"
    plain = trunk(trunk_name).eval()
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, tmp_path / "trunk.safetensors")
    model = timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "trunk.safetensors"), num_classes=1000),
    ).eval()
    x = torch.randn(1, 3, PX, PX)
    trunk_weights = model.state_dict()
    assert all(torch.equal(trunk_weights[k], v) for k, v in plain.state_dict().items())
    with torch.no_grad():  # two instances with the same weights: equal up to float rounding
        torch.testing.assert_close(model(x), plain(x), rtol=0, atol=1e-6)
    switched_on(model).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "stt.safetensors")
    again = timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "stt.safetensors"), num_classes=1000),
    ).eval()
    assert same_weights(again, model)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=1e-6)
