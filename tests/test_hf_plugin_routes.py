"""The plugged families (stt_convnext_*, stt_efficientnet_*) on the routes stt_resnet* takes: the captioning
encoder inside VisionEncoderDecoderModel (build, train, save/load, pipeline, remote code, train-caption) and
timm <-> transformers conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap

import hub_fixtures
import pytest
import safetensors.torch
import timm
import torch
from model_helpers import same_weights
from PIL import Image
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForImageTextToText,
    VisionEncoderDecoderModel,
)

import stt_hf  # noqa: F401  (registers the models and Auto classes)
from stt_hf.hf.captioning import (
    build_captioner,
    caption_pipeline,
    decoder_config,
    encode_captions,
    train_caption_tokenizer,
)
from stt_hf.hf.configuration_stt_plugin import SttPluginVisionConfig
from stt_hf.hf.convert import convert, save_timm_format, timm_to_hf
from stt_hf.hf.modeling_stt_captioner import SttPluginCaptioner
from stt_hf.hf.modeling_stt_plugin import (
    SttPluginForImageClassification,
    SttPluginVisionEncoder,
    hf_to_timm_state_dict,
)

local_hub = hub_fixtures.local_hub
# The ConvNeXt runs in the default suite; the EfficientNet, whose every test builds several models of a
# few seconds each on a 2-core CPU, with --runslow.
FAMILIES = ("stt_convnext_s", pytest.param("stt_efficientnet_lite0", marks=pytest.mark.slow))
PX = 32
CAPTIONS = ["A ripe, red tomato!", "A green apple.", "A stripey fish.", "A pink cake with candles."] * 3
# Two model instances with identical weights: float rounding of their outputs differs per CPU, so weights
# are compared exactly and outputs to this.
OUTPUT_ATOL = 1e-6


@pytest.fixture(scope="module")
def tokenizer():
    return train_caption_tokenizer(CAPTIONS, vocab_size=300, model_max_length=12)


def pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, PX, PX, generator=torch.Generator().manual_seed(1))


def switched_on(model: torch.nn.Module) -> torch.nn.Module:
    """Every weight moved a little, so outputs depend on the attention modules (zero-init gates opened)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def tiny_captioner(name: str, tokenizer) -> SttPluginCaptioner:
    torch.manual_seed(0)
    return build_captioner(name, tokenizer, encoder_kwargs=dict(img_size=PX, hidden_size=32),
                           decoder_kwargs=dict(layers=1, heads=2)).eval()


# ------------------------------------------------------------------------------------- the encoder


@pytest.mark.parametrize("name", FAMILIES)
def test_plugged_encoder_outputs_tokens_and_reloads_with_automodel(name, tmp_path):
    config = SttPluginVisionConfig.from_timm_name(name, img_size=PX, hidden_size=32)
    encoder = switched_on(SttPluginVisionEncoder(config)).eval()
    out = encoder(pixels(), output_hidden_states=True)
    height, width = config.feature_grid()
    assert out.last_hidden_state.shape == (2, height * width, 32) and out.pooler_output.shape == (2, 32)
    assert out.attentions is None and len(out.hidden_states) == config.num_stages
    assert tuple(encoder.timm_model.forward_features(pixels()).shape[-2:]) == (height, width)
    encoder.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is SttPluginVisionEncoder and same_weights(loaded, encoder)
    torch.testing.assert_close(loaded(pixels()).last_hidden_state, out.last_hidden_state, rtol=0,
                               atol=OUTPUT_ATOL)


def test_plugged_encoder_config_errors():
    with pytest.raises(ValueError, match="position_embedding must be one of"):
        SttPluginVisionConfig.from_timm_name("stt_convnext_s", position_embedding="rope")
    # A ResNet option would otherwise be an ignored attribute of the config.
    with pytest.raises(ValueError, match=r"stt_convnext_s does not take \['channels'\]"):
        SttPluginVisionConfig.from_timm_name("stt_convnext_s", channels=[8, 16, 32, 64])
    assert SttPluginVisionConfig.from_timm_name("stt_convnext_s").hidden_size == 256  # the trunk's width


# ---------------------------------------------------------------------------------- the captioner


@pytest.mark.parametrize("name", FAMILIES)
def test_plugged_captioner_trains_and_keeps_the_encoder_as_timm_built_it(name, tokenizer):
    config = SttPluginVisionConfig.from_timm_name(name, img_size=PX, hidden_size=32)
    torch.manual_seed(0)
    encoder = SttPluginVisionEncoder(config)
    built = {k: v.clone() for k, v in encoder.state_dict().items()}
    decoder = AutoModelForCausalLM.from_config(decoder_config("gpt2", tokenizer, 32, layers=1, heads=2))
    model = SttPluginCaptioner(encoder=encoder, decoder=decoder)
    # transformers' initialization of the pair leaves timm's (attention at the identity) as it was.
    assert all(torch.equal(v, built[k]) for k, v in model.encoder.state_dict().items())

    model = tiny_captioner(name, tokenizer).train()
    assert type(model) is SttPluginCaptioner and type(model.encoder) is SttPluginVisionEncoder
    gates = [f"{n}.norm.weight" for n in model.encoder.timm_model.attn_names]
    params = dict(model.encoder.timm_model.named_parameters())
    assert gates and all(not params[g].any() for g in gates)  # STT starts as the identity
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    labels = encode_captions(tokenizer, CAPTIONS[:2], max_length=12)
    for _ in range(2):  # the gates get a gradient once the step before has opened the path to them
        loss = model(pixel_values=pixels(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.isfinite(loss) and all(params[g].any() for g in gates)
    ids = model.eval().generate(pixels(), num_beams=1, max_length=8)
    assert ids.shape[0] == 2 and (ids[:, 0] == tokenizer.bos_token_id).all()


def test_plugged_captioner_save_load_and_pipeline(tokenizer, tmp_path):
    model = switched_on(tiny_captioner("stt_convnext_s", tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model.config.encoder.image_processor().save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "configuration_stt_plugin.py", "modeling_stt_captioner.py",
            "modeling_stt_plugin.py", "plugin.py", "preprocessor_config.json"} <= files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForImageTextToText"] == "modeling_stt_captioner.SttPluginCaptioner"
    labels = encode_captions(tokenizer, CAPTIONS[:2], max_length=12)
    with torch.no_grad():
        expected = model(pixel_values=pixels(), labels=labels).logits
        for cls in (VisionEncoderDecoderModel, AutoModelForImageTextToText, SttPluginCaptioner):
            loaded = cls.from_pretrained(tmp_path).eval()
            assert type(loaded.encoder) is SttPluginVisionEncoder, cls.__name__
            assert same_weights(loaded, model), cls.__name__
            torch.testing.assert_close(loaded(pixel_values=pixels(), labels=labels).logits, expected, rtol=0,
                                       atol=OUTPUT_ATOL)

    # The pipeline preprocesses with the saved processor and decodes what generate gives.
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    captioner = caption_pipeline(str(tmp_path))
    processed = captioner.image_processor(images=image, return_tensors="pt")["pixel_values"]
    ids = captioner.model.generate(processed, max_new_tokens=5)
    direct = tokenizer.decode(ids[0], skip_special_tokens=True)
    assert captioner(image, max_new_tokens=5)[0]["generated_text"] == direct.strip()


# A fresh interpreter that cannot import stt_hf: the captioner's own code loads it.
REMOTE_SCRIPT = textwrap.dedent("""
    import sys

    class HideSttHf:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "stt_hf":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, HideSttHf())
    import safetensors.torch, torch
    from transformers import AutoModelForImageTextToText
    folder = sys.argv[1]
    expected = safetensors.torch.load_file(folder + "/expected.safetensors")
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__name__ == "SttPluginCaptioner", type(model)
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        logits = model(pixel_values=expected["pixels"], labels=expected["labels"]).logits
    torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=1e-6)
    assert "stt_hf" not in sys.modules
    print("REMOTE-OK")
""")


@pytest.mark.slow
def test_plugged_captioner_loads_without_stt_hf(tokenizer, tmp_path):
    model = switched_on(tiny_captioner("stt_efficientnet_lite0", tokenizer))
    model.save_pretrained(tmp_path)
    labels = encode_captions(tokenizer, CAPTIONS[:2], max_length=12)
    with torch.no_grad():
        logits = model(pixel_values=pixels(), labels=labels).logits
    safetensors.torch.save_file({"pixels": pixels(), "labels": labels, "logits": logits},
                                tmp_path / "expected.safetensors")
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"], "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-S", "-c", REMOTE_SCRIPT, str(tmp_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "REMOTE-OK" in run.stdout, run.stdout + run.stderr[-3000:]


def test_train_caption_resolves_a_plugged_encoders_options():
    from stt_hf.tasks.train_caption import PLUGGED_ENCODER_KWARGS, parse_args

    model_args, _, _ = parse_args(["--encoder", "stt_convnext_s", "--output_dir", "unused"])
    assert json.loads(model_args.encoder_kwargs) == PLUGGED_ENCODER_KWARGS  # no ResNet widths
    given = '{"attn_layer": "res_block"}'
    model_args, _, _ = parse_args(["--encoder", "stt_convnext_s", "--encoder_kwargs", given,
                                   "--output_dir", "unused"])
    assert model_args.encoder_kwargs == given


@pytest.mark.slow
def test_train_caption_trains_a_plugged_encoder(tmp_path):
    """`stt-hf train-caption --encoder stt_convnext_s` on real Tux Paint stamps: a complete captioner."""
    from stt_hf.tasks.train_caption import main

    out = tmp_path / "run"
    results = main(["--encoder", "stt_convnext_s", "--dataset", "tuxpaint", "--max_train_samples", "16",
                    "--max_eval_samples", "4", "--img_size", "32", "--hidden_size", "32",
                    "--decoder_layers", "1", "--decoder_heads", "2", "--vocab_size", "300",
                    "--max_caption_length", "8", "--per_device_train_batch_size", "8", "--max_steps", "2",
                    "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                    "--generation_num_beams", "1", "--warmup_steps", "0", "--disable_tqdm", "true",
                    "--output_dir", str(out)])
    assert results["global_step"] == 2 and results["eval"]["test_samples"] == 4
    loaded = VisionEncoderDecoderModel.from_pretrained(out)
    assert type(loaded.encoder) is SttPluginVisionEncoder
    assert loaded.config.encoder.attention["options"]["modes"] == "hw"  # the plugged default
    card = (out / "README.md").read_text()
    assert "`stt_convnext_s`, channels [32, 64, 128, 256], attention `stt` over modes `hw`" in card
    assert "(after placement, stage(s) 3)" in card


# ----------------------------------------------------------------------------------- conversion

# A non-default option per family, which the conversion must carry (and 32 px attention for the
# EfficientNet, built for 224 px by default, to keep its dry run small).
OPTIONS = {"stt_convnext_s": {"stt_heads": 4}, "stt_efficientnet_lite0": {"stt_reduction": 8, "img_size": 32}}


@pytest.mark.parametrize("name", FAMILIES)
def test_plugged_timm_weights_to_transformers_and_back(name, tmp_path):
    torch.manual_seed(0)
    timm_model = switched_on(timm.create_model(name, num_classes=3, **OPTIONS[name])).eval()
    weights = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(timm_model.state_dict(), weights)
    with torch.no_grad():
        reference = timm_model(pixels())

    hf = timm_to_hf(weights, tmp_path / "hf", model_name=name, **OPTIONS[name])
    assert type(hf) is SttPluginForImageClassification and hf.config.num_labels == 3
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert same_weights(loaded, hf)
    as_timm = hf_to_timm_state_dict(hf.state_dict())
    assert all(torch.equal(v, timm_model.state_dict()[k]) for k, v in as_timm.items())
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels()).logits, reference, rtol=0, atol=OUTPUT_ATOL)

    convert(tmp_path / "hf", tmp_path / "timm")  # and back: timm's format, loaded by timm
    back = safetensors.torch.load_file(tmp_path / "timm" / "model.safetensors")
    assert back.keys() == timm_model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in timm_model.state_dict().items())
    timm_config = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert timm_config["architecture"] == name and "num_classes" not in timm_config["model_args"]
    option, value = next(iter(OPTIONS[name].items()))
    assert timm_config["model_args"][option] == value
    reloaded = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    wrapper = AutoModelForImageClassification.from_pretrained(tmp_path / "timm").eval()  # TimmWrapper
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels()), reference, rtol=0, atol=OUTPUT_ATOL)
        torch.testing.assert_close(wrapper(pixels()).logits, reference, rtol=0, atol=OUTPUT_ATOL)
    # The timm model itself writes the same folder, and its folder converts to the same transformers model.
    save_timm_format(timm_model, tmp_path / "direct")
    assert json.loads((tmp_path / "direct" / "config.json").read_text()) == timm_config
    convert(tmp_path / "direct", tmp_path / "hf2")
    assert same_weights(AutoModelForImageClassification.from_pretrained(tmp_path / "hf2"), hf)


def test_stt_hf_convert_takes_a_plugged_model_name(tmp_path, capsys):
    from stt_hf.cli import main

    timm_model = timm.create_model("stt_convnext_s", num_classes=5)
    safetensors.torch.save_file(timm_model.state_dict(), tmp_path / "w.safetensors")
    assert main(["convert", str(tmp_path / "w.safetensors"), str(tmp_path / "hf"),
                 "--model-name", "stt_convnext_s"]) == 0
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "hf")
    assert type(loaded) is SttPluginForImageClassification and loaded.config.num_labels == 5
    assert loaded.config.registered_name() == "stt_convnext_s"
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "timm")]) == 0
    back = safetensors.torch.load_file(tmp_path / "timm" / "model.safetensors")
    assert all(torch.equal(back[k], v) for k, v in timm_model.state_dict().items())


# ------------------------------------------------ the second family on the classification routes

LITE = "stt_efficientnet_lite0"


@pytest.mark.slow
def test_efficientnet_family_classifies_segments_and_reloads(tmp_path):
    """tests/test_hf_plugin.py takes stt_convnext_s through the Auto classes, pipelines and UperNet; the
    EfficientNet family the same way (at 32 px)."""
    from transformers import (
        AutoModelForSemanticSegmentation,
        UperNetConfig,
        UperNetForSemanticSegmentation,
        pipeline,
    )

    from stt_hf.hf.configuration_stt_plugin import SttPluginConfig
    from stt_hf.hf.modeling_stt_plugin import SttPluginBackbone

    torch.manual_seed(0)
    labels = {0: "a", 1: "b", 2: "c"}
    config = SttPluginConfig.from_timm_name(LITE, img_size=PX, num_labels=3, id2label=labels)
    model = switched_on(SttPluginForImageClassification(config)).eval()
    assert model.timm_model.attn_names[0].endswith(".se")  # the empty attention slot of its blocks
    model.save_pretrained(tmp_path / "cls")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "cls").eval()
    assert type(loaded) is SttPluginForImageClassification and same_weights(loaded, model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels()).logits, model(pixels()).logits, rtol=0, atol=OUTPUT_ATOL)
    classify = pipeline("image-classification", model=str(tmp_path / "cls"))
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    assert {r["label"] for r in classify(image, top_k=3)} == set(labels.values())

    backbone = SttPluginConfig.from_timm_name(LITE, img_size=PX, out_features=["stage2", "stage3", "stage4"])
    seg = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone, num_labels=4, hidden_size=16,
                                                       use_auxiliary_head=False)).eval()
    assert type(seg.backbone) is SttPluginBackbone and seg.backbone.channels == [40, 112, 320]
    seg.save_pretrained(tmp_path / "seg")
    again = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "seg").eval()
    assert same_weights(again, seg)
    with torch.no_grad():
        logits = seg(pixel_values=pixels(1)).logits
        assert logits.shape == (1, 4, PX, PX)
        torch.testing.assert_close(again(pixel_values=pixels(1)).logits, logits, rtol=0, atol=OUTPUT_ATOL)


@pytest.mark.slow
def test_efficientnet_family_push_to_hub_and_remote_code(local_hub, tmp_path):
    """Pushed to the (local) Hub, pulled back with stt-hf, and loaded from its folder without it."""
    local_hub.run_python(textwrap.dedent(f"""
        import torch
        import stt_hf
        from transformers import AutoModelForImageClassification
        from stt_hf.hf.configuration_stt_plugin import SttPluginConfig
        from stt_hf.hf.modeling_stt_plugin import SttPluginForImageClassification

        torch.manual_seed(0)
        model = SttPluginForImageClassification(SttPluginConfig.from_timm_name({LITE!r}, img_size=32,
                                                                               num_labels=3)).eval()
        model.push_to_hub("user/lite0-stt")
        pulled = AutoModelForImageClassification.from_pretrained("user/lite0-stt").eval()
        x = torch.randn(2, 3, 32, 32)
        state = model.state_dict()
        assert all(torch.equal(v, state[k]) for k, v in pulled.state_dict().items())
        torch.testing.assert_close(pulled(x).logits, model(x).logits, rtol=0, atol=1e-6)
        model.save_pretrained({str(tmp_path / "lite0")!r})
    """))
    assert {"config.json", "model.safetensors", "modeling_stt_plugin.py", "plugin.py"} <= set(
        local_hub.files("user/lite0-stt"))
    from test_hf_plugin import load_remotely, save_with_expected

    folder = tmp_path / "lite0"
    save_with_expected(AutoModelForImageClassification.from_pretrained(folder), folder)
    load_remotely(folder, tmp_path=tmp_path)
