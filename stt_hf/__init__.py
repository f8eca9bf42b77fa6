"""stt-hf: STT (Synthesizing Tensor Transformations) attention for timm and Hugging Face models.

`import stt_hf` registers the `stt_*` models with timm and the Stt* classes with transformers'
Auto classes (AutoConfig, AutoModel, AutoModelForImageClassification, AutoBackbone), including the
captioning encoder `SttVisionEncoder` that VisionEncoderDecoderModel builds through AutoModel.
"""

from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

from . import compat, models
from .hf.captioning import ImageToTextPipeline, build_captioner, caption_pipeline, train_caption_tokenizer
from .hf.configuration_stt import SttCaptionerConfig, SttConfig, SttVisionConfig
from .hf.convert import load_checkpoint, save_timm_format, timm_from_pretrained
from .hf.modeling_stt import (
    CheckpointError,
    SttBackbone,
    SttCaptioner,
    SttForImageClassification,
    SttModel,
    SttPreTrainedModel,
    SttVisionEncoder,
    register_auto_classes,
)
from .layers import STT, FlatSynthesizer, SelfAttention2d, create_attn
from .models import SttResNet

__version__ = "0.1.0"

compat.install()  # the 0.1 module paths (stt_hf.configuration_stt, ...) keep importing

AutoConfig.register(SttConfig.model_type, SttConfig, exist_ok=True)
AutoModel.register(SttConfig, SttModel, exist_ok=True)
AutoModelForImageClassification.register(SttConfig, SttForImageClassification, exist_ok=True)
AutoBackbone.register(SttConfig, SttBackbone, exist_ok=True)
register_auto_classes()  # SttVisionConfig -> SttVisionEncoder, for VisionEncoderDecoderModel

__all__ = ["STT", "CheckpointError", "FlatSynthesizer", "SelfAttention2d", "SttBackbone", "SttCaptioner",
           "SttCaptionerConfig", "SttConfig", "SttVisionConfig", "SttVisionEncoder", "ImageToTextPipeline",
           "build_captioner", "caption_pipeline",
           "train_caption_tokenizer",
           "SttForImageClassification", "SttModel", "SttPreTrainedModel", "SttResNet", "create_attn",
           "load_checkpoint", "models", "save_timm_format", "timm_from_pretrained"]
