"""Captioning with an STT encoder: the tokenizer, the captioner and an "image-to-text" pipeline.

    tokenizer = train_caption_tokenizer(captions, vocab_size=1000)
    model = build_captioner("stt_resnet10_s", tokenizer, encoder_kwargs=dict(img_size=64))
    model.generate(pixel_values, num_beams=3)

The captioner is a `SttCaptioner`, i.e. a transformers `VisionEncoderDecoderModel` whose encoder is
`SttVisionEncoder`, or for a plugged timm CNN (`stt_convnext_s`, `stt_efficientnet_lite0`, ...) a
`SttPluginCaptioner` whose encoder is `SttPluginVisionEncoder`; the decoder is a GPT-2 or BERT style causal
LM built from a config, or any local pretrained causal LM.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    BertConfig,
    GenerationConfig,
    GPT2Config,
    Pipeline,
    PreTrainedTokenizerFast,
)

from ..models.plugin import PLUGGED_MODELS
from .configuration_stt import SttVisionConfig
from .configuration_stt_plugin import SttPluginVisionConfig
from .modeling_stt_captioner import SttCaptioner, SttPluginCaptioner

SPECIAL_TOKENS = dict(pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
DECODERS = ("gpt2", "bert")


def train_caption_tokenizer(captions: list[str], vocab_size: int = 1000,
                            model_max_length: int = 32) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (lower-cased) trained on `captions`, as a PreTrainedTokenizerFast.

    Encoding adds no special tokens: the captioner's labels get `</s>` appended by `encode_captions`,
    and decoding starts from `<s>` (the decoder start token).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    captions = [c for c in captions if isinstance(c, str) and c.strip()]
    if not captions:
        raise ValueError("train_caption_tokenizer needs at least one non-empty caption")
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(captions, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length,
                                   padding_side="right", **SPECIAL_TOKENS)


def encode_captions(tokenizer, captions: list[str], max_length: int) -> torch.Tensor:
    """Labels (B, L) for the decoder: the caption's tokens, then eos, truncated to `max_length`
    tokens in all, padded with -100 (ignored by the loss)."""
    ids = tokenizer(list(captions), add_special_tokens=False, truncation=True,
                    max_length=max_length - 1)["input_ids"]
    ids = [seq + [tokenizer.eos_token_id] for seq in ids]
    longest = max(len(seq) for seq in ids)
    return torch.tensor([seq + [-100] * (longest - len(seq)) for seq in ids], dtype=torch.long)


def decoder_inputs(labels: torch.Tensor, start_token_id: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """The decoder's teacher-forcing inputs for `labels` (B, L): `decoder_input_ids`, the start token then
    the labels shifted right (what VisionEncoderDecoderModel would make itself), and the
    `decoder_attention_mask` that marks them real up to the end token. Padding is at the end of a causal
    decoder's input, so the mask cannot change the loss; passing it states which inputs are real, as
    transformers asks, and Seq2SeqTrainer drops both when it generates."""
    ids = torch.cat([torch.full_like(labels[:, :1], start_token_id), labels[:, :-1]], dim=1)
    mask = ids != -100
    return {"decoder_input_ids": ids.masked_fill(~mask, pad_token_id), "decoder_attention_mask": mask.long()}


def decoder_config(kind: str, tokenizer, hidden_size: int, layers: int = 2, heads: int = 4,
                   max_positions: int = 64):
    """A small causal-LM config with cross-attention: GPT-2 style ("gpt2") or BERT style ("bert")."""
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if kind == "gpt2":
        return GPT2Config(n_layer=layers, n_embd=hidden_size, n_head=heads, n_positions=max_positions,
                          add_cross_attention=True, **ids)
    if kind == "bert":
        return BertConfig(num_hidden_layers=layers, hidden_size=hidden_size, num_attention_heads=heads,
                          intermediate_size=4 * hidden_size, max_position_embeddings=max_positions,
                          is_decoder=True, add_cross_attention=True, **ids)
    raise ValueError(f"decoder must be one of {DECODERS} or a local pretrained causal LM folder, "
                     f"got {kind!r}")


def build_captioner(encoder: str | SttVisionConfig | SttPluginVisionConfig, tokenizer, *,
                    decoder: str = "gpt2", encoder_kwargs: dict | None = None,
                    decoder_kwargs: dict | None = None, generation: dict | None = None) -> SttCaptioner:
    """A fresh captioner: an STT encoder and a decoder.

    encoder: a registered timm name, `stt_resnet*` (an SttCaptioner) or a plugged one such as
        `stt_convnext_s` (an SttPluginCaptioner), with `encoder_kwargs` as its config's overrides; or the
        encoder's config itself (SttVisionConfig, SttPluginVisionConfig).

    decoder: "gpt2" / "bert" (built from a small config, sized by `decoder_kwargs`: hidden_size,
        layers, heads, max_positions) or the path of a pretrained causal LM, loaded with
        cross-attention added; its vocabulary must be the tokenizer's.
    generation: GenerationConfig overrides (max_length, num_beams, ...), saved with the model.
    """
    decoder_kwargs = dict(decoder_kwargs or {})
    if isinstance(encoder, (SttVisionConfig, SttPluginVisionConfig)):
        encoder_config = encoder
    else:
        options = dict(encoder_kwargs or {})
        options.setdefault("hidden_size", decoder_kwargs.get("hidden_size", 256))
        config_class = SttPluginVisionConfig if encoder in PLUGGED_MODELS else SttVisionConfig
        encoder_config = config_class.from_timm_name(encoder, **options)
    plugged = isinstance(encoder_config, SttPluginVisionConfig)
    captioner_class = SttPluginCaptioner if plugged else SttCaptioner
    if decoder in DECODERS:
        decoder_kwargs.setdefault("hidden_size", encoder_config.hidden_size)
        text_model = AutoModelForCausalLM.from_config(decoder_config(decoder, tokenizer, **decoder_kwargs))
    else:
        config = AutoConfig.from_pretrained(decoder, is_decoder=True, add_cross_attention=True)
        if config.vocab_size != len(tokenizer):
            raise ValueError(f"decoder {decoder!r} has a vocabulary of {config.vocab_size} tokens but the "
                             f"tokenizer has {len(tokenizer)}: pass the decoder's own tokenizer")
        text_model = AutoModelForCausalLM.from_pretrained(decoder, config=config)
    model = captioner_class(encoder=captioner_class.encoder_class(encoder_config), decoder=text_model)
    configure_generation(model, tokenizer, **(generation or {}))
    return model


def configure_generation(model, tokenizer, **overrides) -> GenerationConfig:
    """Set the special token ids on the model config and its generation config (saved with it)."""
    ids = dict(decoder_start_token_id=tokenizer.bos_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    for key, value in ids.items():
        setattr(model.config, key, value)
    settings: dict[str, Any] = dict(max_length=tokenizer.model_max_length, num_beams=3,
                                    no_repeat_ngram_size=3, early_stopping=True)
    settings.update(overrides)
    if settings["num_beams"] == 1:
        settings.pop("early_stopping")  # a beam-search option; greedy configs with it fail to save
    model.generation_config = GenerationConfig(**ids, **settings)
    return model.generation_config


class ImageToTextPipeline(Pipeline):
    """Images in, [{"generated_text": ...}] out, for encoder-decoder captioners like ours.

    transformers 5 redirects the task name "image-to-text" to its chat-style "image-text-to-text"
    pipeline, which needs a text prompt and a multimodal processor. Pass this class instead:
    `pipeline("image-to-text", model=path, pipeline_class=ImageToTextPipeline)`, or use
    `caption_pipeline(path)`.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True

    def _sanitize_parameters(self, max_new_tokens=None, generate_kwargs=None, timeout=None):
        forward = dict(generate_kwargs or {})
        if max_new_tokens is not None:
            forward["max_new_tokens"] = max_new_tokens
        return ({"timeout": timeout} if timeout is not None else {}), forward, {}

    def preprocess(self, image, timeout=None):
        from transformers.image_utils import load_image

        from ..data.common import to_rgb  # the package's one conversion policy

        return self.image_processor(images=to_rgb(load_image(image, timeout=timeout)), return_tensors="pt")

    def _forward(self, model_inputs, **generate_kwargs):
        pixel_values = model_inputs["pixel_values"].to(self.model.dtype)
        return {"ids": self.model.generate(pixel_values=pixel_values, **generate_kwargs)}

    def postprocess(self, model_outputs):
        texts = self.tokenizer.batch_decode(model_outputs["ids"], skip_special_tokens=True)
        return [{"generated_text": text.strip()} for text in texts]


def caption_pipeline(model, **kwargs) -> ImageToTextPipeline:
    """`pipeline("image-to-text", model=model, pipeline_class=ImageToTextPipeline, **kwargs)`, without
    transformers' notice that the task was renamed (it does not apply to this pipeline class)."""
    from transformers import pipeline
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return pipeline("image-to-text", model=model, pipeline_class=ImageToTextPipeline, **kwargs)
    finally:
        logging.set_verbosity(verbosity)
