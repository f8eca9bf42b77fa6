"""Captioning: SttVisionEncoder inside VisionEncoderDecoderModel, tokenizer, save/load, pipeline, training."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    VisionEncoderDecoderModel,
    pipeline,
)

import stt_hf
from stt_hf import (
    ImageToTextPipeline,
    SttCaptioner,
    SttVisionConfig,
    SttVisionEncoder,
    build_captioner,
    caption_pipeline,
    train_caption_tokenizer,
)
from stt_hf.hf.captioning import (
    configure_generation,
    decoder_config,
    decoder_inputs,
    encode_captions,
)

CAPTIONS = ["A ripe, red tomato!", "A green apple.", "A stripey fish.", "A pink cake with candles.",
            "A yellow school bus.", "A red apple."] * 3
TINY = dict(img_size=32, channels=[16, 32, 64, 128])


@pytest.fixture(scope="module")
def tokenizer():
    return train_caption_tokenizer(CAPTIONS, vocab_size=300, model_max_length=16)


def tiny_captioner(tokenizer, decoder="gpt2", **encoder_kwargs):
    torch.manual_seed(0)
    return build_captioner("stt_resnet10_s", tokenizer, decoder=decoder,
                           encoder_kwargs={**TINY, "hidden_size": 64, **encoder_kwargs},
                           decoder_kwargs=dict(layers=1, heads=2)).eval()


def pixels(batch=2, size=32):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("position_embedding", ["learned", "sincos", "none"])
def test_encoder_outputs_a_token_sequence(position_embedding):
    config = SttVisionConfig.from_timm_name("stt_resnet10_s", hidden_size=64,
                                            position_embedding=position_embedding, **TINY)
    encoder = SttVisionEncoder(config).eval()
    out = encoder(pixels(), output_hidden_states=True)
    grid = config.feature_grid()
    assert grid == (4, 4)
    assert out.last_hidden_state.shape == (2, 16, 64)
    assert out.pooler_output.shape == (2, 64)
    assert out.attentions is None and len(out.hidden_states) == 5
    # Another input size works: the learned grid is interpolated.
    assert encoder(pixels(size=48)).last_hidden_state.shape == (2, 36, 64)


def test_encoder_keeps_channels_without_projection_and_registers_with_automodel(tmp_path):
    config = SttVisionConfig.from_timm_name("stt_resnet10_s", **TINY)
    assert config.hidden_size == 128  # the trunk's channels
    encoder = SttVisionEncoder(config)
    assert isinstance(encoder.proj, torch.nn.Identity)
    encoder.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SttVisionEncoder)
    state = encoder.state_dict()
    assert state.keys() == loaded.state_dict().keys()
    assert all(torch.equal(value, state[key]) for key, value in loaded.state_dict().items())
    # Two model instances: weights equal exactly, outputs to float rounding (kernels may sum in another
    # order per instance and CPU; 5.8e-10 apart seen on an AMD EPYC at one thread).
    torch.testing.assert_close(loaded(pixels()).last_hidden_state, encoder.eval()(pixels()).last_hidden_state,
                               rtol=0, atol=1e-6)


def test_encoder_config_errors():
    with pytest.raises(ValueError, match="position_embedding must be one of"):
        SttVisionConfig.from_timm_name("stt_resnet10_s", position_embedding="rope")
    with pytest.raises(ValueError, match="hidden_size divisible by 4"):
        SttVisionEncoder(SttVisionConfig.from_timm_name("stt_resnet10_s", hidden_size=66,
                                                        position_embedding="sincos"))


# ------------------------------------------------------------------------------------ tokenizer


def test_tokenizer_round_trip_and_labels(tokenizer, tmp_path):
    ids = tokenizer("A red apple.", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "a red apple."  # lower-cased, spaces kept
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("A red apple.", add_special_tokens=False)["input_ids"] == ids
    assert (again.bos_token, again.eos_token, again.pad_token) == ("<s>", "</s>", "<pad>")
    labels = encode_captions(tokenizer, ["A red apple.", "A pink cake with candles " * 10], max_length=8)
    assert labels.shape == (2, 8)  # the long caption is truncated to the limit, eos included
    assert labels[1, -1] == tokenizer.eos_token_id
    assert labels[0, len(ids)] == tokenizer.eos_token_id and (labels[0, len(ids) + 1:] == -100).all()
    with pytest.raises(ValueError, match="non-empty caption"):
        train_caption_tokenizer(["", "  "])


# ------------------------------------------------------------------------------ encoder-decoder


@pytest.mark.parametrize("decoder", ["gpt2", "bert"])
def test_captioner_trains_and_generates(tokenizer, decoder):
    model = tiny_captioner(tokenizer, decoder)
    assert isinstance(model, VisionEncoderDecoderModel) and isinstance(model.encoder, SttVisionEncoder)
    labels = encode_captions(tokenizer, CAPTIONS[:2], max_length=16)
    model.train()
    loss = model(pixel_values=pixels(), labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.resnet.conv1.weight.grad.abs().sum() > 0
    model.eval()
    greedy = model.generate(pixels(), num_beams=1, max_length=10)
    beam = model.generate(pixels(), num_beams=3, max_length=10)
    for ids in (greedy, beam):
        assert ids.shape[0] == 2 and ids.shape[1] <= 10
        assert (ids[:, 0] == tokenizer.bos_token_id).all()


def test_from_encoder_decoder_pretrained(tokenizer, tmp_path):
    encoder = SttVisionEncoder(SttVisionConfig.from_timm_name("stt_resnet10_s", hidden_size=64, **TINY))
    encoder.save_pretrained(tmp_path / "encoder")
    bert = AutoModelForCausalLM.from_config(decoder_config("bert", tokenizer, 64, layers=1, heads=2))
    bert.save_pretrained(tmp_path / "bert")
    model = VisionEncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "encoder", tmp_path / "bert")
    assert isinstance(model.encoder, SttVisionEncoder)
    assert model.decoder.config.add_cross_attention
    torch.testing.assert_close(model.encoder.resnet.conv1.weight, encoder.resnet.conv1.weight)
    torch.testing.assert_close(model.decoder.bert.embeddings.word_embeddings.weight,
                               bert.bert.embeddings.word_embeddings.weight)
    # transformers 5 reads decoder_config.is_decoder, which GPT2Config lacks: for a GPT-2 folder, pass
    # the loaded decoder (cross-attention added) as decoder_model.
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=len(tokenizer)))
    gpt2.save_pretrained(tmp_path / "decoder")
    model = VisionEncoderDecoderModel.from_encoder_decoder_pretrained(
        tmp_path / "encoder", None,
        decoder_model=GPT2LMHeadModel.from_pretrained(tmp_path / "decoder", add_cross_attention=True))
    torch.testing.assert_close(model.decoder.transformer.wte.weight, gpt2.transformer.wte.weight)
    configure_generation(model, tokenizer)  # start/pad/eos ids, which the loss needs to shift labels
    assert model(pixel_values=pixels(), labels=encode_captions(tokenizer, CAPTIONS[:2], 16)).loss.isfinite()
    # And as a decoder of build_captioner: a local pretrained causal LM with the tokenizer's vocabulary.
    captioner = build_captioner("stt_resnet10_s", tokenizer, decoder=str(tmp_path / "decoder"),
                                encoder_kwargs={**TINY, "hidden_size": 64})
    torch.testing.assert_close(captioner.decoder.transformer.wte.weight, gpt2.transformer.wte.weight)
    AutoModelForCausalLM.from_config(decoder_config("gpt2", tokenizer, 64)).save_pretrained(tmp_path / "d2")
    other = train_caption_tokenizer(CAPTIONS, vocab_size=280)
    with pytest.raises(ValueError, match="vocabulary of"):
        build_captioner("stt_resnet10_s", other, decoder=str(tmp_path / "d2"))


def save_captioner(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model.config.encoder.image_processor().save_pretrained(folder)


def test_save_load_identical_generations(tokenizer, tmp_path):
    model = tiny_captioner(tokenizer)
    with torch.no_grad():  # make the output depend on the image, not only on the bias
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_captioner(model, tokenizer, tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "preprocessor_config.json", "modeling_stt.py", "configuration_stt.py"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["decoder_start_token_id"] == tokenizer.bos_token_id
    assert generation["eos_token_id"] == tokenizer.eos_token_id and generation["num_beams"] == 3
    expected = model.generate(pixels(), max_length=12)
    for cls in (VisionEncoderDecoderModel, AutoModelForImageTextToText, SttCaptioner):
        loaded = cls.from_pretrained(tmp_path).eval()
        assert torch.equal(loaded.generate(pixels(), max_length=12), expected), cls.__name__

    # A fresh process without stt_hf: the checkpoint's own code loads it.
    torch.save(pixels(), tmp_path / "x.pt")
    code = f"""
import sys, torch
sys.modules["stt_hf"] = None  # importing the package now fails
from transformers import AutoModelForImageTextToText
model = AutoModelForImageTextToText.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
print(type(model).__name__, model.generate(torch.load({str(tmp_path / "x.pt")!r}), max_length=12).tolist())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == f"SttCaptioner {expected.tolist()}"


def test_image_to_text_pipeline_any_image_mode(tokenizer, tmp_path):
    save_captioner(tiny_captioner(tokenizer), tokenizer, tmp_path)
    with quiet_transformers():  # its "task renamed" notice has a logging bug that pytest turns into an error
        captioner = pipeline("image-to-text", model=str(tmp_path), pipeline_class=ImageToTextPipeline)
    assert isinstance(caption_pipeline(str(tmp_path)), ImageToTextPipeline)
    rgb = Image.new("RGB", (40, 30), (200, 30, 30))
    images = [rgb, rgb.convert("L"), rgb.convert("P"), rgb.convert("RGBA"), rgb.convert("CMYK")]
    for image in images:
        result = captioner(image, max_new_tokens=5)
        assert isinstance(result, list) and isinstance(result[0]["generated_text"], str), image.mode
    batch = captioner(images[:2], max_new_tokens=5)
    assert len(batch) == 2


def test_stt_hf_registers_the_encoder():
    from transformers import AutoConfig

    assert AutoConfig.for_model("stt_vision").__class__ is SttVisionConfig
    assert stt_hf.SttCaptioner is SttCaptioner


@contextlib.contextmanager
def quiet_transformers():
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def test_train_caption_takes_a_named_tokenizer(tokenizer, tmp_path):
    from stt_hf.tasks.train_caption import CaptionModelArguments, load_tokenizer

    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(CaptionModelArguments(tokenizer=str(tmp_path / "tok"), max_caption_length=20), [])
    assert loaded.get_vocab() == tokenizer.get_vocab() and loaded.model_max_length == 20
    # A tokenizer without a padding token cannot train a captioner: say so before training.
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    config["pad_token"] = None
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="has no pad_token"):
        load_tokenizer(CaptionModelArguments(tokenizer=str(tmp_path / "tok")), [])


@pytest.mark.parametrize("decoder", ["gpt2", "bert"])
def test_decoder_inputs_are_what_the_model_makes_from_labels_plus_a_mask(tokenizer, decoder):
    """The training collator's decoder inputs: the ids VisionEncoderDecoderModel builds from the labels
    itself, with a mask over the start token and every real label before the last; the loss is unchanged."""
    labels = encode_captions(tokenizer, ["A green apple.", "A pink cake with candles."], max_length=16)
    model = tiny_captioner(tokenizer, decoder)
    inputs = decoder_inputs(labels, model.config.decoder_start_token_id, model.config.pad_token_id)
    from transformers.models.vision_encoder_decoder.modeling_vision_encoder_decoder import shift_tokens_right

    assert torch.equal(inputs["decoder_input_ids"], shift_tokens_right(labels, model.config.pad_token_id,
                                                                       model.config.decoder_start_token_id))
    lengths = (labels != -100).sum(1).tolist()
    assert inputs["decoder_attention_mask"].sum(1).tolist() == [min(n + 1, labels.shape[1]) for n in lengths]
    with torch.no_grad():
        plain = model(pixel_values=pixels(), labels=labels).loss
        given = model(pixel_values=pixels(), labels=labels, **inputs).loss
    torch.testing.assert_close(given, plain, rtol=1e-5, atol=1e-6)
