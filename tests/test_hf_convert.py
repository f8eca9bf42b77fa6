"""One checkpoint, every loader: timm format <-> transformers format, hf-hub ids, TimmWrapper, CLI."""

from __future__ import annotations

import argparse
import json
import runpy
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import safetensors.torch
import timm
import torch
from transformers import AutoModel, AutoModelForImageClassification

from stt_hf import CheckpointError, SttConfig, SttForImageClassification, load_checkpoint, save_timm_format
from stt_hf.hf.convert import (
    add_convert_parser,
    config_from_timm_model,
    hf_to_timm,
    main,
    timm_from_pretrained,
    timm_to_hf,
)

NAME = "stt_resnet10_s"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "convert_checkpoint.py"


@pytest.fixture(scope="module")
def timm_model():
    """A timm STT model with non-default options and its STT blocks switched on."""
    torch.manual_seed(0)
    model = timm.create_model(NAME, num_classes=4, stt_heads=4, stt_modes="hw").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("se.norm.weight"):
                p.normal_()
    return model


@pytest.fixture(scope="module")
def timm_dir(timm_model, tmp_path_factory):
    return save_timm_format(timm_model, tmp_path_factory.mktemp("timm") / "stt-timm")


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(timm_model, pixels):
    with torch.no_grad():
        return timm_model(pixels)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_timm_format_files(timm_dir, timm_model):
    config = json.loads((timm_dir / "config.json").read_text())
    assert config["architecture"] == NAME and config["num_classes"] == 4
    assert config["num_features"] == timm_model.num_features
    # timm 1.0.31's save_for_hf writes num_classes here, which breaks transformers' TimmWrapper.
    assert "num_classes" not in config["model_args"]
    assert config["model_args"]["stt_heads"] == 4 and config["model_args"]["stt_modes"] == "hw"
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    state = safetensors.torch.load_file(timm_dir / "model.safetensors")
    assert state.keys() == timm_model.state_dict().keys()


def test_timm_local_dir(timm_dir, pixels, reference):
    model = timm.create_model(f"local-dir:{timm_dir}", pretrained=True).eval()
    assert model.num_classes == 4
    close(model(pixels), reference)


def test_timm_hf_hub_id_from_the_cache(timm_dir, tmp_path, monkeypatch, pixels, reference):
    """`hf-hub:` ids resolve through huggingface_hub; offline, from a cache laid out as the Hub's."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--local--stt-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(timm_dir, repo / "snapshots" / commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = timm.create_model("hf-hub:local/stt-tiny", pretrained=True, cache_dir=tmp_path / "hub").eval()
    close(model(pixels), reference)


def test_transformers_timm_wrapper(timm_dir, pixels, reference):
    wrapper = AutoModelForImageClassification.from_pretrained(timm_dir).eval()
    assert type(wrapper).__name__ == "TimmWrapperForImageClassification"
    close(wrapper(pixels).logits, reference)
    trunk = AutoModel.from_pretrained(timm_dir).eval()
    assert type(trunk).__name__ == "TimmWrapperModel"
    assert trunk(pixels).pooler_output.shape == (2, 256)


def test_timm_to_transformers_and_back(timm_dir, tmp_path, pixels, reference):
    hf = timm_to_hf(timm_dir, tmp_path / "hf")
    assert isinstance(hf, SttForImageClassification)
    assert hf.config.stt_heads == 4 and hf.config.num_labels == 4
    close(SttForImageClassification.from_pretrained(tmp_path / "hf").eval()(pixels).logits, reference)
    back = hf_to_timm(tmp_path / "hf", tmp_path / "timm")
    close(back(pixels), reference)
    assert json.loads((tmp_path / "timm" / "config.json").read_text()) == json.loads(
        (timm_dir / "config.json").read_text())
    close(timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()(pixels), reference)


@pytest.mark.parametrize("options", [{"stt_synth": "mixture"}, {"attn_layer": None}])
def test_transformers_model_to_timm_format(tmp_path, pixels, options):
    hf = SttForImageClassification(SttConfig.from_timm_name(NAME, num_labels=2, **options)).eval()
    save_timm_format(hf, tmp_path / "timm")
    timm_model = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    assert len(timm_model.attn_names) == len(hf.resnet.attn_names)  # None survives timm as "none"
    close(timm_model(pixels), hf(pixels).logits)


def test_label_names_travel(tmp_path):
    model = SttForImageClassification(
        config_from_timm_model(timm.create_model(NAME, num_classes=2), id2label={0: "no", 1: "yes"}))
    save_timm_format(model, tmp_path / "timm")
    assert json.loads((tmp_path / "timm" / "config.json").read_text())["label_names"] == ["no", "yes"]
    assert timm_to_hf(tmp_path / "timm", tmp_path / "hf").config.id2label == {0: "no", 1: "yes"}
    wrapper = AutoModelForImageClassification.from_pretrained(tmp_path / "timm")
    assert wrapper.config.id2label == {0: "no", 1: "yes"}


def test_folder_from_timms_own_writer(timm_model, tmp_path, pixels, reference):
    """timm's save_for_hf folders (num_classes inside model_args) convert too."""
    timm.models.save_for_hf(timm_model, tmp_path / "timm", safe_serialization=True)
    assert "num_classes" in json.loads((tmp_path / "timm" / "config.json").read_text())["model_args"]
    close(timm_to_hf(tmp_path / "timm", tmp_path / "hf")(pixels).logits, reference)


def test_transformers_checkpoint_into_timm(timm_dir, tmp_path, pixels, reference):
    timm_to_hf(timm_dir, tmp_path / "hf")
    model = timm_from_pretrained(tmp_path / "hf")
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    close(model(pixels), reference)
    close(timm_from_pretrained(timm_dir)(pixels), reference)  # a timm folder works too


def test_state_dict_files(timm_model, tmp_path, pixels, reference):
    torch.save({"state_dict": timm_model.state_dict()}, tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        timm_to_hf(tmp_path / "weights.pth", tmp_path / "hf", model_name=NAME, stt_heads=4, stt_modes="hw")
    hf = timm_to_hf(tmp_path / "weights.pth", tmp_path / "hf", model_name=NAME, allow_pickle=True,
                    stt_heads=4, stt_modes="hw")
    close(hf(pixels).logits, reference)
    safetensors.torch.save_file(timm_model.state_dict(), tmp_path / "weights.safetensors")
    hf = timm_to_hf(tmp_path / "weights.safetensors", tmp_path / "hf2", model_name=NAME, stt_heads=4,
                    stt_modes="hw")
    close(hf(pixels).logits, reference)
    with pytest.raises(ValueError, match="model_name"):
        timm_to_hf(tmp_path / "weights.safetensors", tmp_path / "hf3")


def test_wrong_architecture_names_keys_and_shapes(timm_model, tmp_path):
    safetensors.torch.save_file(timm_model.state_dict(), tmp_path / "weights.safetensors")
    with pytest.raises(CheckpointError, match=r"resnet\.layer4\.1\.\S+ has shape \(4, .*\(2, "):
        timm_to_hf(tmp_path / "weights.safetensors", tmp_path / "hf", model_name=NAME, stt_modes="hw")
    with pytest.raises(CheckpointError, match=r"resnet\.layer1\.1\.\S+ .* is missing"):
        timm_to_hf(tmp_path / "weights.safetensors", tmp_path / "hf", model_name="stt_resnet18_s",
                   channels=(32, 64, 128, 256), stt_heads=4, stt_modes="hw")


def test_load_checkpoint_safety(timm_dir, tmp_path):
    assert load_checkpoint(timm_dir).keys() == load_checkpoint(timm_dir / "model.safetensors").keys()
    data = (timm_dir / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors .*corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.safetensors")
    (tmp_path / "dir").mkdir()
    torch.save({"a": torch.zeros(1)}, tmp_path / "dir" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_checkpoint(tmp_path / "dir")
    assert load_checkpoint(tmp_path / "dir", allow_pickle=True).keys() == {"a"}
    torch.save({"a": object()}, tmp_path / "code.pth")  # weights_only refuses arbitrary objects
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(tmp_path / "code.pth", allow_pickle=True)


def test_command_line(timm_dir, tmp_path, capsys, pixels, reference):
    assert main([str(timm_dir), str(tmp_path / "hf")]) == 0
    assert main([str(tmp_path / "hf"), str(tmp_path / "timm")]) == 0  # direction from the source
    close(timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()(pixels), reference)
    torch.save(load_checkpoint(timm_dir), tmp_path / "w.pth")
    assert main([str(tmp_path / "w.pth"), str(tmp_path / "x"), "--model-name", NAME]) == 2
    assert "--allow-pickle" in capsys.readouterr().err


def test_cli_hooks(timm_dir, tmp_path, monkeypatch):
    parser = argparse.ArgumentParser(prog="stt-hf")
    add_convert_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", str(timm_dir), str(tmp_path / "a")])
    assert args.func(args) == 0 and (tmp_path / "a" / "model.safetensors").is_file()
    monkeypatch.setattr("sys.argv", ["convert_checkpoint.py", str(timm_dir), str(tmp_path / "b")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exit_.value.code == 0 and (tmp_path / "b" / "modeling_stt.py").is_file()
