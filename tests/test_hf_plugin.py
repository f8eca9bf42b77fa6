"""Plugged models in transformers: SttPluginConfig (a timm trunk + the spec) and transformers' own CNNs
(ResNet, ConvNext, RegNet) with attention added, saved, pushed and loaded back in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap

import hub_fixtures
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from model_helpers import switched_on
from PIL import Image
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    ConvNextBackbone,
    ConvNextConfig,
    ConvNextForImageClassification,
    RegNetConfig,
    RegNetForImageClassification,
    ResNetBackbone,
    ResNetConfig,
    ResNetForImageClassification,
    Trainer,
    TrainingArguments,
    pipeline,
)

import stt_hf  # noqa: F401  (registers the models and Auto classes)
from stt_hf.hf.attached import ATTACHED
from stt_hf.hf.configuration_stt_plugin import SttPluginConfig
from stt_hf.hf.modeling_stt_plugin import (
    SttPluginBackbone,
    SttPluginForImageClassification,
    SttPluginModel,
    hf_to_timm_state_dict,
    timm_to_hf_state_dict,
)
from stt_hf.models.plugin import PlacementError, add_attention, fill_attention_keys

local_hub = hub_fixtures.local_hub
NAME = "stt_convnext_s"
PX = 32

# Two model instances with identical weights: float rounding of their outputs differs per CPU
# (5.8e-10 seen on an AMD EPYC), so weights are compared exactly and outputs to this.
OUTPUT_ATOL = 1e-6


def pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, PX, PX, generator=torch.Generator().manual_seed(1))


# A fresh interpreter that cannot import stt_hf (see tests/test_hf_modeling.py): loads `ckpt` with
# trust_remote_code and compares with the saved logits.
REMOTE_SCRIPT = textwrap.dedent("""
    import sys

    class HideSttHf:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "stt_hf":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, HideSttHf())
    import safetensors.torch, torch
    from transformers import AutoModelForImageClassification
    for ckpt in sys.argv[1:]:
        expected = safetensors.torch.load_file(ckpt + "/expected.safetensors")
        model = AutoModelForImageClassification.from_pretrained(ckpt, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        with torch.no_grad():
            # Another process may run other thread counts: the same weights, within float rounding.
            torch.testing.assert_close(model(expected["pixels"]).logits, expected["logits"], rtol=1e-5,
                                       atol=1e-6, msg=lambda m: f"{ckpt}: {m}")
    assert "stt_hf" not in sys.modules
    print("REMOTE-OK")
""")


def load_remotely(*folders, tmp_path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
    }
    run = subprocess.run(
        [sys.executable, "-S", "-c", REMOTE_SCRIPT, *map(str, folders)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0 and "REMOTE-OK" in run.stdout, run.stdout + run.stderr[-3000:]


def save_with_expected(model, folder) -> None:
    model.save_pretrained(folder)
    with torch.no_grad():
        expected = {"pixels": pixels(), "logits": model.eval()(pixels()).logits}
    safetensors.torch.save_file(expected, folder / "expected.safetensors")


# ------------------------------------------------------------------------- SttPluginConfig: timm trunk


def test_config_from_timm_name_is_the_timm_network():
    """The transformers class and timm's entry point build one network: weights convert by a prefix."""
    config = SttPluginConfig.from_timm_name(NAME, num_labels=3)
    assert config.trunk == "convnext_atto" and config.attention["places"] == [
        {"stage": 3, "position": "after"}
    ]
    torch.manual_seed(0)
    model = switched_on(SttPluginForImageClassification(config)).eval()
    timm_model = timm.create_model(NAME, num_classes=3).eval()
    assert set(timm_to_hf_state_dict(timm_model.state_dict())) == set(model.state_dict())
    timm_model.load_state_dict(hf_to_timm_state_dict(model.state_dict()), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(timm_model(pixels()), model(pixels()).logits, rtol=0, atol=OUTPUT_ATOL)
    with pytest.raises(ValueError, match="Unexpected key 'classifier.weight'"):
        hf_to_timm_state_dict({"classifier.weight": torch.zeros(1)})
    with pytest.raises(
        ValueError, match="Unknown plugged model 'stt_convnext_huge'; the registered ones are"
    ):
        SttPluginConfig.from_timm_name("stt_convnext_huge")


def test_config_overrides_reach_the_attention():
    config = SttPluginConfig.from_timm_name(NAME, attn_layer="res_block", img_size=28, stt_heads=4)
    assert config.attention["attn_layer"] == "res_block" and config.attention["img_size"] == [28, 28]
    assert config.attention["options"]["heads"] == 4 and config.input_size() == (3, 28, 28)
    plain = SttPluginConfig.from_timm_name(NAME, attn_layer="none", img_size=28)
    assert plain.attention is None and plain.input_size() == (3, 28, 28)  # the size the variants share
    model = SttPluginForImageClassification(SttPluginConfig.from_timm_name(NAME, attn_places={2: "after"}))
    assert model.timm_model.attn_names == ["stages.2.blocks.attn"]
    with pytest.raises(PlacementError, match="no stage 7"):
        SttPluginForImageClassification(SttPluginConfig.from_timm_name(NAME, attn_places={7: "after"}))


def test_any_timm_trunk_by_name(tmp_path):
    """Not only the registered names: any timm CNN and any places, saved and loaded by the Auto classes."""
    attention = {
        "attn_layer": "stt",
        "places": {"3": "block", "4": "after"},
        "img_size": 64,
        "options": {"reduction": 4, "min_channels": 8},
    }
    config = SttPluginConfig(trunk="regnetx_002", attention=attention, num_labels=4, img_size=64)
    assert config.num_stages == 5 and config.stage_names[-1] == "stage4"
    model = switched_on(SttPluginForImageClassification(config)).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "m").eval()
    assert type(loaded) is SttPluginForImageClassification
    assert loaded.config.attention == config.attention
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=OUTPUT_ATOL)


def test_saved_folder_loads_with_every_auto_class(tmp_path):
    torch.manual_seed(0)
    config = SttPluginConfig.from_timm_name(NAME, num_labels=3, id2label={0: "cat", 1: "dog", 2: "emu"})
    model = switched_on(SttPluginForImageClassification(config)).eval()
    model.save_pretrained(tmp_path / "m")
    assert (
        json.loads((tmp_path / "m" / "config.json").read_text())["auto_map"][
            "AutoModelForImageClassification"
        ]
        == "modeling_stt_plugin.SttPluginForImageClassification"
    )
    assert type(AutoConfig.from_pretrained(tmp_path / "m")) is SttPluginConfig
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels()).logits, model(pixels()).logits, rtol=0, atol=OUTPUT_ATOL)
        trunk = AutoModel.from_pretrained(tmp_path / "m").eval()
        assert type(trunk) is SttPluginModel
        out = trunk(pixels(), output_hidden_states=True)
        assert out.pooler_output.shape == (2, 256) and len(out.hidden_states) == 4
    backbone = SttPluginBackbone.from_pretrained(tmp_path / "m", out_features=["stage1", "stage3"]).eval()
    with torch.no_grad():
        maps = backbone(pixels()).feature_maps
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 16, 16), (256, 4, 4)]
    assert backbone.channels == [64, 256]
    assert type(AutoBackbone.from_config(config)) is SttPluginBackbone

    # A pipeline reads the folder's preprocessor and labels.
    classify = pipeline("image-classification", model=str(tmp_path / "m"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    assert {r["label"] for r in classify(image, top_k=3)} == {"cat", "dog", "emu"}

    # Remote code: a fresh interpreter without stt_hf.
    with torch.no_grad():
        expected = {"pixels": pixels(), "logits": model(pixels()).logits}
    safetensors.torch.save_file(expected, tmp_path / "m" / "expected.safetensors")
    load_remotely(tmp_path / "m", tmp_path=tmp_path)


def test_backbone_under_upernet(tmp_path):
    """transformers' UperNet takes the plugged backbone by its config, and reloads with the Auto class."""
    from transformers import AutoModelForSemanticSegmentation, UperNetConfig, UperNetForSemanticSegmentation

    backbone = SttPluginConfig.from_timm_name(NAME, out_features=["stage0", "stage1", "stage2", "stage3"])
    config = UperNetConfig(backbone_config=backbone, num_labels=4, hidden_size=32, use_auxiliary_head=False)
    model = UperNetForSemanticSegmentation(config).eval()
    assert type(model.backbone) is SttPluginBackbone
    with torch.no_grad():
        logits = model(pixel_values=pixels(1)).logits
    assert logits.shape == (1, 4, PX, PX)
    model.save_pretrained(tmp_path / "seg")
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "seg").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels(1)).logits, logits, rtol=0, atol=OUTPUT_ATOL)


def test_plugin_push_to_hub_and_load_back(local_hub, tmp_path):
    local_hub.run_python(
        textwrap.dedent("""
        import sys, torch
        import stt_hf
        from transformers import AutoModelForImageClassification
        from stt_hf.hf.configuration_stt_plugin import SttPluginConfig
        from stt_hf.hf.modeling_stt_plugin import SttPluginForImageClassification

        torch.manual_seed(0)
        config = SttPluginConfig.from_timm_name("stt_convnext_s", num_labels=3)
        model = SttPluginForImageClassification(config)
        model.eval().push_to_hub("user/stt-convnext")
        pulled = AutoModelForImageClassification.from_pretrained("user/stt-convnext").eval()
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(pulled(x).logits, model(x).logits, rtol=0, atol=1e-6)
    """)
    )
    assert {"config.json", "model.safetensors", "modeling_stt_plugin.py", "plugin.py"} <= set(
        local_hub.files("user/stt-convnext")
    )


def test_stt_hf_train_trains_a_plugged_model(tmp_path):
    """`stt-hf train --model stt_convnext_s`: the main job's recipe on the plugged ConvNeXt."""
    from stt_hf.tasks.train import main

    out = tmp_path / "run"
    results = main(
        [
            "--model",
            NAME,
            "--dataset",
            "mnist_5k",
            "--max_train_samples",
            "64",
            "--max_eval_samples",
            "32",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "32",
            "--bf16",
            "false",
            "--output_dir",
            str(out),
            "--model_kwargs",
            '{"attn_layer": "stt"}',
            "--disable_tqdm",
            "true",
        ]
    )
    assert results["global_step"] == 2
    loaded = AutoModelForImageClassification.from_pretrained(out)
    assert type(loaded) is SttPluginForImageClassification and loaded.config.input_size() == (3, 28, 28)
    assert loaded.timm_model.attn_names == ["stages.3.blocks.attn"]


# ---------------------------------------------------------------------- transformers' own CNNs

TINY = dict(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])
HF_MODELS = {
    "resnet": lambda: ResNetForImageClassification(ResNetConfig(embedding_size=8, num_labels=3, **TINY)),
    "convnext": lambda: ConvNextForImageClassification(ConvNextConfig(num_labels=3, **TINY)),
    "regnet": lambda: RegNetForImageClassification(
        RegNetConfig(embedding_size=8, groups_width=8, num_labels=3, **TINY)
    ),
    "resnet_backbone": lambda: ResNetBackbone(
        ResNetConfig(embedding_size=8, out_features=["stage2", "stage4"], **TINY)
    ),
    "convnext_backbone": lambda: ConvNextBackbone(ConvNextConfig(out_features=["stage2", "stage4"], **TINY)),
}
PLACES = {2: "after", 3: "after"}
SMALL = dict(img_size=PX, reduction=4, min_channels=8)


def outputs(model, x):
    out = model(x)
    return out.logits if hasattr(out, "logits") else torch.cat([m.flatten(1) for m in out.feature_maps], 1)


@pytest.mark.parametrize("kind", HF_MODELS)
def test_transformers_cnn_identity_keys_and_reload(kind, tmp_path):
    torch.manual_seed(0)
    HF_MODELS[kind]().save_pretrained(tmp_path / "plain")  # the "pretrained" weights, a local file
    base_cls = type(HF_MODELS[kind]())
    model = base_cls.from_pretrained(tmp_path / "plain").eval()
    x = pixels()
    with torch.no_grad():
        reference = outputs(model, x)
    keys = set(model.state_dict())
    add_attention(model, PLACES, **SMALL)
    assert type(model) is ATTACHED[base_cls] and isinstance(model, base_cls)
    with torch.no_grad():
        assert torch.equal(outputs(model, x), reference)  # the identity at init
    assert keys <= set(model.state_dict()) and len(model.attn_names) == 2
    plain = safetensors.torch.load_file(tmp_path / "plain" / "model.safetensors")
    model.load_state_dict(fill_attention_keys(plain, model), strict=True)  # the plain checkpoint, strict
    assert json.loads(json.dumps(model.config.stt_attention)) == model.attention_spec

    switched_on(model).eval()
    model.save_pretrained(tmp_path / "stt")
    loaded = ATTACHED[base_cls].from_pretrained(tmp_path / "stt").eval()
    with torch.no_grad():
        torch.testing.assert_close(outputs(loaded, x), outputs(model, x), rtol=0, atol=OUTPUT_ATOL)
    assert loaded.attn_names == model.attn_names


def test_transformers_cnn_errors_name_the_stages():
    model = HF_MODELS["convnext"]()
    with pytest.raises(
        PlacementError, match=r"no stage 4; its stages are 0 \(convnext.encoder.stages.0: after\)"
    ):
        add_attention(model, {4: "after"}, **SMALL)
    with pytest.raises(PlacementError, match="does not take position 'block'"):
        add_attention(model, {3: "block"}, **SMALL)
    assert type(model) is ConvNextForImageClassification and not hasattr(model.config, "stt_attention")


def test_transformers_cnns_load_in_a_fresh_process_without_stt_hf(tmp_path):
    folders = []
    for kind in ("resnet", "convnext", "regnet"):
        torch.manual_seed(0)
        model = switched_on(add_attention(HF_MODELS[kind](), PLACES, **SMALL))
        save_with_expected(model, tmp_path / kind)
        folders.append(tmp_path / kind)
    load_remotely(*folders, tmp_path=tmp_path)


def test_transformers_cnn_trains_with_the_trainer(tmp_path):
    torch.manual_seed(0)
    model = add_attention(HF_MODELS["resnet"](), PLACES, **SMALL)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if ".attn." in n}
    data = [{"pixel_values": torch.randn(3, PX, PX), "labels": i % 3} for i in range(16)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=3,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=data).train()
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert changed and any(n.endswith("norm.weight") for n in changed)  # the zero-init gate opens


def test_transformers_cnn_push_to_hub_and_load_back(local_hub):
    local_hub.run_python(
        textwrap.dedent("""
        import torch
        import stt_hf
        from stt_hf.models.plugin import add_attention
        from transformers import AutoModelForImageClassification, RegNetConfig, RegNetForImageClassification

        torch.manual_seed(0)
        model = RegNetForImageClassification(RegNetConfig(embedding_size=8, groups_width=8, num_labels=3,
                                             hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1]))
        add_attention(model, {3: "after"}, img_size=32, reduction=4, min_channels=8)
        model.eval().push_to_hub("user/regnet-stt")
        pulled = AutoModelForImageClassification.from_pretrained("user/regnet-stt", trust_remote_code=True)
        pulled.eval()
        x = torch.randn(2, 3, 32, 32)
        assert type(pulled).__name__ == "SttRegNetForImageClassification"
        torch.testing.assert_close(pulled(x).logits, model(x).logits, rtol=0, atol=1e-6)
    """)
    )
