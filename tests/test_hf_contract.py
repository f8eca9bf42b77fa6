"""What transformers users rely on beyond a forward pass, as a user sees it: attn_implementation, loads with
missing keys and on the meta device, gradient checkpointing through the Trainer, mismatched heads and PEFT."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import safetensors.torch
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from stt_hf import SttConfig, SttForImageClassification, SttModel
from stt_hf.hf.checkpoints import CheckpointError
from stt_hf.models.stt_resnet import MODEL_OPTIONS

TINY = dict(depth=10, channels=[8, 16, 16, 16], stem_width=8, small_input=True, img_size=16,
            stt_min_channels=8, stt_hidden=8, stt_pool_size=2, num_labels=3)


def pixels(batch=4, size=16):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved classifier with non-trivial attention and BN statistics (not the values of a fresh build)."""
    torch.manual_seed(0)
    model = SttForImageClassification(SttConfig(**TINY))
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) * 0.1)  # BN weights, running stats, STT's zero-init norm
    path = tmp_path_factory.mktemp("saved") / "tiny"
    model.eval().save_pretrained(path)
    return path, model


def test_config_fields_agree_with_the_options_spec():
    """SttConfig's written-out fields have the name, default and annotation of their declaration."""
    fields = {f.name: f for f in dataclasses.fields(SttConfig)}
    for option in MODEL_OPTIONS:
        assert option.name in fields, option.name
        assert fields[option.name].default == option.default, option.name
        assert str(fields[option.name].type) == str(option.type), option.name


def assert_same_model(loaded, model, msg=""):
    """Two model instances: weights exactly equal, outputs within 1e-6 (float rounding differs per CPU)."""
    expected = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), f"{msg} {key}"
    torch.testing.assert_close(loaded(pixels()).logits, model(pixels()).logits, rtol=0, atol=1e-6, msg=msg)


# --- 1. attn_implementation ---------------------------------------------------------------------------

def test_attn_implementation_is_accepted_and_misspellings_still_rejected(saved):
    path, model = saved
    assert SttConfig(**TINY, attn_implementation="eager")._attn_implementation == "eager"
    loaded = SttForImageClassification.from_pretrained(path, attn_implementation="eager").eval()
    assert loaded.config._attn_implementation == "eager"
    assert_same_model(loaded, model)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['attn_implementaton'\]"):
        SttConfig(**TINY, attn_implementaton="eager")
    with pytest.raises(TypeError, match="stt_head"):  # not a config field: the model is given it, and refuses
        SttForImageClassification.from_pretrained(path, stt_head=4)


def test_sdpa_is_refused_by_design(saved):
    """STT synthesizes its attention maps: there is no dot-product attention for sdpa or flash kernels."""
    path, _ = saved
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        SttForImageClassification.from_pretrained(path, attn_implementation="sdpa")


# --- 2. initialization: meta device, missing keys ----------------------------------------------------

def test_meta_device_build_then_load_gives_the_saved_outputs(saved):
    path, model = saved
    with torch.device("meta"):
        empty = SttForImageClassification(SttConfig.from_pretrained(path))
    empty.to_empty(device="cpu")
    empty.load_state_dict(safetensors.torch.load_file(path / "model.safetensors"))
    assert_same_model(empty.eval(), model)
    for kwargs in (dict(low_cpu_mem_usage=True), dict(device_map="cpu")):
        loaded = SttForImageClassification.from_pretrained(path, **kwargs).eval()
        assert_same_model(loaded, model, msg=str(kwargs))


def test_init_weights_initializes_every_weight_and_buffer():
    """A meta-device build materialized by init_weights: finite weights, fresh BN statistics, identity."""
    config = SttConfig(**TINY)
    with torch.device("meta"):
        model = SttForImageClassification(config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.fill_(float("nan") if tensor.is_floating_point() else 7)  # what empty memory may hold
    model.init_weights()
    state = model.state_dict()
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    for name, tensor in state.items():
        if name.endswith("running_mean"):
            assert torch.equal(tensor, torch.zeros_like(tensor)), name
        elif name.endswith("running_var"):
            assert torch.equal(tensor, torch.ones_like(tensor)), name
        elif name.endswith("num_batches_tracked"):
            assert tensor.item() == 0, name
    for built in (model, SttForImageClassification(config)):  # materialized, and built as usual
        assert built.resnet.layer4[0].se.norm.weight.abs().sum() == 0  # STT starts as the identity
        assert built.resnet.layer1[0].bn2.weight.abs().sum() == 0  # timm's zero_init_last


def test_missing_keys_are_reported_as_transformers_reports_them(saved, tmp_path, caplog):
    path, model = saved
    SttModel.from_pretrained(path).save_pretrained(tmp_path / "base")  # no classifier
    with caplog.at_level(logging.WARNING):
        head, info = SttForImageClassification.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert "classifier.weight" in caplog.text and "MISSING" in caplog.text.upper()
    assert torch.equal(head.resnet.conv1.weight, model.resnet.conv1.weight)
    assert torch.isfinite(head.classifier.weight).all()


def test_partial_trunk_is_still_a_named_error(saved, tmp_path):
    """Real architecture mismatches keep their strict errors: part of the trunk is refused."""
    path, _ = saved
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text((path / "config.json").read_text())
    weights = safetensors.torch.load_file(path / "model.safetensors")
    del weights["resnet.layer4.0.conv1.weight"]
    safetensors.torch.save_file(weights, tmp_path / "partial" / "model.safetensors", {"format": "pt"})
    with pytest.raises(CheckpointError, match=r"resnet\.layer4\.0\.conv1\.weight .* is missing"):
        SttForImageClassification.from_pretrained(tmp_path / "partial")


# --- 4. mismatched heads -------------------------------------------------------------------------------

def test_other_num_labels_without_ignore_mismatched_sizes_is_a_runtime_error(saved):
    path, _ = saved
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes=True") as caught:
        SttForImageClassification.from_pretrained(path, num_labels=5)
    assert isinstance(caught.value, CheckpointError)  # and the project's own error type
    assert "classifier.weight has shape (3, 16) in the checkpoint, (5, 16) in the model" in str(caught.value)


# --- 3. gradient checkpointing through the Trainer -----------------------------------------------------

def train_losses(tmp_path, **args) -> list[float]:
    torch.manual_seed(0)
    model = SttForImageClassification(SttConfig(**TINY, drop_path_rate=0.1))  # stochastic depth: RNG replayed
    data = Dataset.from_dict({"pixel_values": pixels(8).tolist(), "labels": [0, 1, 2, 0, 1, 2, 0, 1]})
    data.set_format("torch")
    arguments = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3,
                                  learning_rate=0.1, logging_steps=1, report_to=[], save_strategy="no",
                                  use_cpu=True, dataloader_num_workers=0, seed=0, **args)
    trainer = Trainer(model=model, args=arguments, train_dataset=data)
    trainer.train()
    assert model.is_gradient_checkpointing == args.get("gradient_checkpointing", False)
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def test_trainer_gradient_checkpointing_gives_the_same_losses(tmp_path):
    plain = train_losses(tmp_path / "plain")
    checkpointed = train_losses(tmp_path / "ckpt", gradient_checkpointing=True,
                                gradient_checkpointing_kwargs={"use_reentrant": False})
    assert len(plain) == 3
    assert checkpointed == pytest.approx(plain, abs=1e-5)


# --- 5. PEFT -------------------------------------------------------------------------------------------

def test_peft_lora_on_the_classifier_trains_and_saves(saved, tmp_path):
    peft = pytest.importorskip("peft")
    path, _ = saved
    model = SttForImageClassification.from_pretrained(path)
    assert model.base_model is model  # a PreTrainedModel: what PEFT builds on
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["classifier"]))
    trainable = {name for name, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    before = {n: p.detach().clone() for n, p in lora.named_parameters()}
    optimizer = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        loss = lora(pixel_values=pixels(), labels=torch.tensor([0, 1, 2, 0])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in lora.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    lora.save_pretrained(tmp_path / "adapter")
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["classifier"]
    lora.eval()
    reloaded = peft.PeftModel.from_pretrained(SttForImageClassification.from_pretrained(path),
                                              tmp_path / "adapter").eval()
    torch.testing.assert_close(reloaded(pixel_values=pixels()).logits, lora(pixel_values=pixels()).logits,
                               rtol=0, atol=1e-6)
