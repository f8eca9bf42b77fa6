"""The transformers integration: config, models, Auto classes, save/load, remote code, pipeline."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import warnings

import hub_fixtures
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from PIL import Image
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    BitImageProcessor,
    pipeline,
)

from stt_hf import (
    CheckpointError,
    SttBackbone,
    SttConfig,
    SttForImageClassification,
    SttModel,
    SttResNet,
    timm_from_pretrained,
)
from stt_hf.models.stt_resnet import MODEL_ARGS

NAME = "stt_resnet10_s"  # the smallest model: 32 px, half width

local_hub = hub_fixtures.local_hub


def small_config(**overrides) -> SttConfig:
    return SttConfig.from_timm_name(NAME, **{"num_labels": 3, **overrides})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved SttForImageClassification whose STT blocks are switched on (not the identity)."""
    torch.manual_seed(0)
    model = SttForImageClassification(small_config(id2label={0: "cat", 1: "dog", 2: "emu"})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("se.norm.weight"):
                p.normal_()
    path = tmp_path_factory.mktemp("ckpt") / "stt-tiny"
    model.save_pretrained(path)
    return path, model


def pixels(batch=2, size=32):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


# --- configuration ---------------------------------------------------------------------------------

def test_registered_with_auto_classes():
    config = small_config()
    assert isinstance(AutoConfig.for_model("stt"), SttConfig)
    assert type(AutoModel.from_config(config)) is SttModel
    assert type(AutoModelForImageClassification.from_config(config)) is SttForImageClassification
    assert type(AutoBackbone.from_config(config)) is SttBackbone


@pytest.mark.parametrize("module", ["configuration_stt", "modeling_stt"])
def test_all_lists_every_public_class(module):
    module = importlib.import_module(f"stt_hf.hf.{module}")
    defined = {name for name, value in vars(module).items() if inspect.isclass(value)
               and value.__module__ == module.__name__ and not name.startswith("_")}
    assert defined <= set(module.__all__)
    assert all(getattr(module, name) is not None for name in module.__all__)


@pytest.mark.parametrize("name", sorted(MODEL_ARGS))
def test_presets_follow_the_timm_registry(name):
    config = SttConfig.from_timm_name(name)
    cfg = timm.models.get_pretrained_cfg(name)
    assert config.timm_architecture() == name
    assert config.num_labels == cfg.num_classes
    assert config.input_size() == cfg.input_size
    assert config.data_config["crop_pct"] == cfg.crop_pct
    assert list(config.data_config["mean"]) == list(cfg.mean)


@pytest.mark.parametrize("name", ["stt_resnet10_s", "stt_resnet18_s_mixture"])
def test_preset_builds_the_timm_model(name):
    """Same parameter names and shapes as timm.create_model(name), under `resnet.` / `classifier.`."""
    timm_shapes = {k: v.shape for k, v in timm.create_model(name).state_dict().items()}
    hf = SttForImageClassification(SttConfig.from_timm_name(name))
    hf_shapes = {(f"fc.{k[11:]}" if k.startswith("classifier.") else k.removeprefix("resnet.")): v.shape
                 for k, v in hf.state_dict().items()}
    assert hf_shapes == timm_shapes


def test_config_overrides_and_timm_spelling():
    config = SttConfig.from_timm_name(NAME, num_classes=7, stt_synth="random", in_chans=1)
    assert config.num_labels == 7 and config.num_classes == 7
    assert config.stt_synth == "random" and config.num_channels == 1
    assert config.timm_architecture() == NAME  # closest registered name; every option is explicit
    assert len(config.data_config["mean"]) == 1  # statistics follow in_chans

    # An option changed away from its entry's default still names the closest entry, not a sibling.
    block = SttConfig.from_timm_name("stt_resnet18_s", attn_placement="block", stt_synth="random")
    assert block.timm_architecture() == "stt_resnet18_s_random"
    assert block.placed_stages() == (3, 4)
    block = SttConfig.from_timm_name("stt_resnet18_s", attn_placement="block")
    assert block.timm_architecture() == "stt_resnet18_s"
    assert SttConfig.from_timm_name("stt_resnet18_s").placed_stages() == (4,)  # final: after stage 4


@pytest.mark.parametrize("field, value", [
    ("depth", 19), ("attn_layer", "dot"), ("attn_placement", "middle"), ("attn_stages", [5]),
    ("attn_stages", []), ("stt_modes", "xyz"), ("stt_synth", "sparse"), ("stt_heads", 0),
    ("stt_reduction", 1.5), ("stt_temperature", 0), ("stt_resize", "yes"), ("channels", [8, 16, 32]),
    ("img_size", 0), ("img_size", [32]), ("stem_type", "wide"), ("output_stride", 4), ("drop_rate", 1.5),
    ("stt_fixed", True), ("data_config", {"size": 3}),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        SttConfig(**{field: value})


def test_config_rejects_misspelt_options():
    with pytest.raises(ValueError, match="stt_head"):
        SttConfig(stt_head=4)
    with pytest.raises(ValueError, match="Unknown STT model"):
        SttConfig.from_timm_name("stt_resnet11")


def test_config_save_load(tmp_path):
    config = small_config(attn_stages=(2, 3, 4), stt_modes="hw", img_size=(32, 48))
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is SttConfig
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert loaded.to_timm_kwargs()["img_size"] == (32, 48)


def test_config_push_to_hub_uploads_the_local_files(local_hub, tmp_path):
    """save_pretrained(push_to_hub=True) uploads the folder's files as they are, config.json included."""
    folder = tmp_path / "stt-config"
    local_hub.run_python(textwrap.dedent("""
        import pathlib, sys
        from huggingface_hub import hf_hub_download
        from stt_hf import SttConfig

        folder = pathlib.Path(sys.argv[1])
        config = SttConfig.from_timm_name("stt_resnet10_s", num_labels=3)
        config.save_pretrained(folder, push_to_hub=True, repo_id="user/stt-config")
        downloaded = pathlib.Path(hf_hub_download("user/stt-config", "config.json"))
        assert downloaded.read_bytes() == (folder / "config.json").read_bytes()
    """), str(folder))
    hub = local_hub.files("user/stt-config")
    local = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {name: hub[name] for name in local} == local  # also the model code and preprocessor config
    pushed = json.loads(hub["config.json"])
    assert pushed["architecture"] == NAME and pushed["input_size"] == [3, 32, 32]  # timm's keys
    assert pushed["auto_map"]["AutoConfig"] == "configuration_stt.SttConfig"


# --- models ----------------------------------------------------------------------------------------

def test_model_outputs():
    model = SttModel(small_config()).eval()
    out = model(pixels(), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 256, 4, 4)
    assert out.pooler_output.shape == (2, 256)
    assert [tuple(h.shape[1:]) for h in out.hidden_states] == [
        (64, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert model(pixels()).hidden_states is None
    as_tuple = model(pixels(), return_dict=False)
    assert torch.equal(as_tuple[0], out.last_hidden_state)
    with pytest.raises(ValueError, match="pixel_values"):
        model(torch.zeros(1, 1, 32, 32))


def test_classifier_matches_timm_forward():
    model = SttForImageClassification(small_config()).eval()
    trunk = model.resnet
    expected = model.classifier(trunk.forward_head(trunk.forward_features(pixels()), pre_logits=True))
    # the same weights along two call paths: equal up to float rounding
    torch.testing.assert_close(model(pixels()).logits, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("problem_type, num_labels, labels, loss_fn", [
    ("single_label_classification", 3, torch.tensor([0, 2]), torch.nn.functional.cross_entropy),
    ("multi_label_classification", 3, torch.tensor([[1.0, 0, 1], [0, 1, 0]]),
     torch.nn.functional.binary_cross_entropy_with_logits),
    ("regression", 1, torch.tensor([0.5, -1.0]),
     lambda logits, y: torch.nn.functional.mse_loss(logits.squeeze(), y)),
])
def test_classification_losses(problem_type, num_labels, labels, loss_fn):
    model = SttForImageClassification(small_config(num_labels=num_labels, problem_type=problem_type))
    out = model(pixels(), labels=labels)
    assert out.logits.shape == (2, num_labels)
    torch.testing.assert_close(out.loss, loss_fn(out.logits, labels))
    out.loss.backward()
    assert model.classifier.weight.grad is not None


def test_backbone_feature_maps():
    backbone = SttBackbone(small_config(out_features=["stage2", "stage4"])).eval()
    assert backbone.out_indices == [2, 4] and backbone.channels == [64, 256]
    out = backbone(pixels())
    assert [tuple(f.shape) for f in out.feature_maps] == [(2, 64, 16, 16), (2, 256, 4, 4)]
    assert out.hidden_states is None
    full = backbone(pixels(), output_hidden_states=True)
    assert len(full.hidden_states) == 5
    assert all(torch.equal(a, b) for a, b in zip(full.feature_maps, out.feature_maps, strict=True))
    assert SttBackbone(small_config(out_indices=[0, 1])).out_features == ["stem", "stage1"]


def test_gradient_checkpointing_gives_the_same_gradients():
    """transformers' activation checkpointing recomputes each stage in the backward pass, with the kwargs
    asked for, and gives the gradients of a plain backward."""
    def grads(checkpointing: bool) -> tuple[dict, int]:
        torch.manual_seed(0)
        model = SttForImageClassification(small_config()).train()
        if checkpointing:
            with warnings.catch_warnings():  # transformers 5 renames it activation_checkpointing_enable
                warnings.simplefilter("ignore", FutureWarning)
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert model.is_gradient_checkpointing
            assert model.resnet.layer4._gradient_checkpointing_func.keywords == {"use_reentrant": False}
        calls = []
        model.resnet.layer2[0].register_forward_pre_hook(lambda *_: calls.append(1))
        model(pixels(), labels=torch.tensor([0, 1])).loss.backward()
        return {k: p.grad for k, p in model.named_parameters() if p.grad is not None}, len(calls)

    (plain, plain_calls), (ckpt, ckpt_calls) = grads(False), grads(True)
    assert (plain_calls, ckpt_calls) == (1, 2)  # the checkpointed stage ran again in the backward pass
    assert plain.keys() == ckpt.keys()
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-6, msg=k)


# --- save and load ---------------------------------------------------------------------------------

def test_checkpoint_files(checkpoint):
    path, _ = checkpoint
    files = set(os.listdir(path))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "configuration_stt.py",
            "modeling_stt.py", "stt_resnet.py", "create.py", "stt.py", "baselines.py"} <= files
    assert not any(f.endswith((".bin", ".pth")) for f in files)
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_stt.SttForImageClassification"
    assert config["auto_map"]["AutoBackbone"] == "modeling_stt.SttBackbone"
    assert "pretrained_cfg" not in config  # it would make transformers take the folder for a timm one
    for file in path.glob("*.py"):  # flat: the remote-code loader follows `from .module import` only
        for line in file.read_text().splitlines():
            if line.lstrip().startswith("from ."):
                module = line.split()[1].removeprefix(".")
                assert (path / f"{module}.py").is_file(), line


def test_save_load_is_bit_exact(checkpoint):
    path, model = checkpoint
    loaded = AutoModelForImageClassification.from_pretrained(path).eval()
    assert type(loaded) is SttForImageClassification  # the installed code, no trust_remote_code needed
    state = model.state_dict()
    assert loaded.state_dict().keys() == state.keys()
    assert all(torch.equal(value, state[key]) for key, value in loaded.state_dict().items())
    # Two model instances: weights equal exactly, outputs to float rounding (kernels may sum in another
    # order per instance and CPU; 5.8e-10 apart seen on an AMD EPYC at one thread).
    torch.testing.assert_close(loaded(pixels()).logits, model(pixels()).logits, rtol=0, atol=1e-6)
    assert loaded.config.id2label == {0: "cat", 1: "dog", 2: "emu"}
    trunk = AutoModel.from_pretrained(path).eval()
    torch.testing.assert_close(trunk(pixels()).pooler_output, model.resnet.forward_head(
        model.resnet.forward_features(pixels()), pre_logits=True), rtol=0, atol=1e-6)
    backbone = SttBackbone.from_pretrained(path, out_features=["stage3"]).eval()
    assert backbone(pixels()).feature_maps[0].shape == (2, 128, 8, 8)


def test_load_with_dtype(checkpoint):
    path, model = checkpoint
    loaded = SttForImageClassification.from_pretrained(path, dtype=torch.bfloat16).eval()
    assert loaded.dtype == torch.bfloat16
    logits = loaded(pixels().bfloat16()).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), model(pixels()).logits, atol=0.1, rtol=0.1)


def test_replace_the_head(checkpoint):
    path, model = checkpoint
    with pytest.raises(CheckpointError, match="ignore_mismatched_sizes=True"):
        SttForImageClassification.from_pretrained(path, num_labels=5)
    new = SttForImageClassification.from_pretrained(path, num_labels=5, ignore_mismatched_sizes=True)
    assert new.classifier.weight.shape == (5, 256)
    assert new.classifier.weight.abs().max() < 1  # initialized, not left as uninitialized memory
    assert torch.equal(new.resnet.conv1.weight, model.resnet.conv1.weight)


def test_mismatched_architecture_names_keys_and_shapes(checkpoint, tmp_path):
    path, _ = checkpoint
    shutil.copytree(path, tmp_path / "other")
    config = json.loads((tmp_path / "other" / "config.json").read_text())
    config["stt_heads"] = 4
    (tmp_path / "other" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"resnet\.layer4\.1\..* has shape \(2, .* \(4, "):
        SttForImageClassification.from_pretrained(tmp_path / "other")


def test_pickle_weights_need_opt_in(checkpoint, tmp_path):
    path, model = checkpoint
    shutil.copy(path / "config.json", tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="use_safetensors=False"):
        SttForImageClassification.from_pretrained(tmp_path)
    loaded = SttForImageClassification.from_pretrained(tmp_path, use_safetensors=False).eval()
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in loaded.state_dict().items())
    # Two model instances: weights equal exactly, outputs to float rounding (kernels may sum in another
    # order per instance and CPU; 5.8e-10 apart seen on an AMD EPYC at one thread).
    torch.testing.assert_close(loaded(pixels()).logits, model(pixels()).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors_is_a_clear_error(checkpoint, tmp_path, damage):
    path, _ = checkpoint
    shutil.copytree(path, tmp_path / "bad")
    weights = tmp_path / "bad" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07not a tensor file" * 8)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        SttForImageClassification.from_pretrained(tmp_path / "bad")


def test_transformers_checkpoint_loads_into_timm(checkpoint):
    path, model = checkpoint
    timm_model = timm_from_pretrained(path)
    assert isinstance(timm_model, SttResNet)
    assert timm_model.pretrained_cfg["input_size"] == (3, 32, 32)
    torch.testing.assert_close(timm_model(pixels()), model(pixels()).logits, rtol=0, atol=1e-6)


# --- image processor and pipeline ------------------------------------------------------------------

def test_image_processor_is_timms_eval_transform(checkpoint):
    path, _ = checkpoint
    processor = AutoImageProcessor.from_pretrained(path)
    assert isinstance(processor, BitImageProcessor)
    assert processor.crop_size == {"height": 32, "width": 32}
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=timm_from_pretrained(path)))
    rng = np.random.default_rng(0)
    exact = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))  # no resampling
    torch.testing.assert_close(processor(exact, return_tensors="pt").pixel_values[0], transform(exact))
    wide = Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    torch.testing.assert_close(processor(wide, return_tensors="pt").pixel_values[0], transform(wide),
                               atol=0.1, rtol=0)  # resize then center crop; resamplers differ slightly
    big = SttConfig.from_timm_name("stt_resnet18").image_processor()
    assert big.size == {"shortest_edge": 256} and big.crop_size == {"height": 224, "width": 224}


def test_pipeline_takes_any_pil_mode(checkpoint):
    path, _ = checkpoint
    classify = pipeline("image-classification", model=str(path))
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    images = [rgb] + [rgb.convert(mode) for mode in ("L", "LA", "RGBA", "P", "CMYK", "1", "I", "F")]
    results = classify(images, top_k=3)
    assert len(results) == len(images)
    for result in results:
        assert {r["label"] for r in result} == {"cat", "dog", "emu"}
        assert abs(sum(r["score"] for r in result) - 1) < 1e-4


# --- remote code in a fresh process ----------------------------------------------------------------

REMOTE_SCRIPT = textwrap.dedent("""
    import sys

    class HideSttHf:  # however stt_hf is installed, this interpreter cannot import it
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "stt_hf":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, HideSttHf())
    try:
        import stt_hf
    except ModuleNotFoundError:
        pass
    else:
        sys.exit(f"stt_hf is importable from {stt_hf.__file__}: the test would prove nothing")
    import safetensors.torch, torch
    from transformers import AutoModel, AutoModelForImageClassification
    ckpt, expected_file, resave = sys.argv[1:4]
    expected = safetensors.torch.load_file(expected_file)
    model = AutoModelForImageClassification.from_pretrained(ckpt, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    state = model.state_dict()
    for key, value in safetensors.torch.load_file(f"{ckpt}/model.safetensors").items():
        assert torch.equal(state[key], value), key  # the weights exactly; the outputs to float rounding:
    torch.testing.assert_close(model(expected["pixels"]).logits, expected["logits"], rtol=0, atol=1e-6)
    trunk = AutoModel.from_pretrained(ckpt, trust_remote_code=True).eval()
    assert type(trunk).__name__ == "SttModel"
    assert "stt_hf" not in sys.modules
    model.save_pretrained(resave)
    print("REMOTE-OK")
""")


def test_remote_code_loads_without_stt_hf(checkpoint, tmp_path):
    """A fresh interpreter that cannot import stt_hf loads the checkpoint with trust_remote_code=True.

    `-S` skips site-packages' .pth files, and with them the editable install's path hooks; PYTHONPATH
    brings back plain site-packages (torch, timm, transformers); the working directory is empty; and
    an import hook refuses stt_hf in case it is installed as a regular package.
    """
    path, model = checkpoint
    with torch.no_grad():
        expected = {"pixels": pixels(), "logits": model(pixels()).logits}
    safetensors.torch.save_file(expected, tmp_path / "expected.safetensors")
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"], "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, "-S", "-c", REMOTE_SCRIPT, str(path), str(tmp_path / "expected.safetensors"),
         str(tmp_path / "resaved")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "REMOTE-OK" in run.stdout, run.stdout + run.stderr
    # Saved again from the remote code: the same code and the same Auto classes.
    for file in path.glob("*.py"):
        assert (tmp_path / "resaved" / file.name).read_text() == file.read_text(), file.name
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert resaved["auto_map"] == json.loads((path / "config.json").read_text())["auto_map"]
