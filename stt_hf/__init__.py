"""stt-hf: STT (Synthesizing Tensor Transformations) attention for timm and Hugging Face models.

`import stt_hf` registers the `stt_*` models with timm and the Stt* classes with transformers'
Auto classes (AutoConfig, AutoModel, AutoModelForImageClassification, AutoBackbone), including the
captioning encoder `SttVisionEncoder` that VisionEncoderDecoderModel builds through AutoModel; see
`stt_hf.registration`. It imports only the network and its transformers classes: every other name
below (captioning, conversion, the segmenter) is imported on first use.
"""

import importlib

from .registration import register

__version__ = "0.1.0"

# Public name -> the module (under stt_hf) that defines it; imported when the name is first used.
_LAZY_NAMES = {
    "STT": "layers",
    "FlatSynthesizer": "layers",
    "SelfAttention2d": "layers",
    "AxialAttention2d": "layers",
    "CrissCrossAttention2d": "layers",
    "create_attn": "layers",
    "SttResNet": "models",
    "add_attention": "models.plugin",
    "find_stages": "models.plugin",
    "SttPluginConfig": "hf.configuration_stt_plugin",
    "SttPluginModel": "hf.modeling_stt_plugin",
    "SttPluginForImageClassification": "hf.modeling_stt_plugin",
    "SttPluginBackbone": "hf.modeling_stt_plugin",
    "SttPluginVisionConfig": "hf.configuration_stt_plugin",
    "SttPluginVisionEncoder": "hf.modeling_stt_plugin",
    "SttPluginCaptionerConfig": "hf.configuration_stt_plugin",
    "SttPluginCaptioner": "hf.modeling_stt_captioner",
    "SttConfig": "hf.configuration_stt",
    "SttVisionConfig": "hf.configuration_stt",
    "SttCaptionerConfig": "hf.configuration_stt",
    "SttPreTrainedModel": "hf.modeling_stt",
    "SttModel": "hf.modeling_stt",
    "SttForImageClassification": "hf.modeling_stt",
    "SttBackbone": "hf.modeling_stt",
    "SttVisionEncoder": "hf.modeling_stt",
    "SttCaptioner": "hf.modeling_stt_captioner",
    "SttUperNetConfig": "hf.modeling_stt_seg",
    "SttUperNetForSemanticSegmentation": "hf.modeling_stt_seg",
    "build_segmenter": "hf.modeling_stt_seg",
    "ImageToTextPipeline": "hf.captioning",
    "build_captioner": "hf.captioning",
    "caption_pipeline": "hf.captioning",
    "train_caption_tokenizer": "hf.captioning",
    "CheckpointError": "hf.checkpoints",
    "load_checkpoint": "hf.checkpoints",
    "save_timm_format": "hf.convert",
    "timm_from_pretrained": "hf.convert",
}
# Subpackages and modules reachable as attributes (`stt_hf.data`) without importing them first.
_SUBMODULES = ("cli", "data", "experiments", "hf", "layers", "metrics", "models", "plotting", "registration",
               "reporting", "tasks")

__all__ = sorted([*_LAZY_NAMES, "models", "register"])


def __getattr__(name: str):
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})


register()
