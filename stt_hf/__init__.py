"""stt-hf: STT (Synthesizing Tensor Transformations) attention for timm and Hugging Face models.

`import stt_hf` registers the `stt_*` models with timm and the Stt* classes with transformers'
Auto classes (AutoConfig, AutoModel, AutoModelForImageClassification, AutoBackbone).
"""

from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

from . import models
from .configuration_stt import SttConfig
from .convert import load_checkpoint, save_timm_format, timm_from_pretrained
from .layers import STT, FlatSynthesizer, SelfAttention2d, create_attn
from .modeling_stt import (
    CheckpointError,
    SttBackbone,
    SttForImageClassification,
    SttModel,
    SttPreTrainedModel,
)
from .models import SttResNet

__version__ = "0.1.0"

AutoConfig.register(SttConfig.model_type, SttConfig, exist_ok=True)
AutoModel.register(SttConfig, SttModel, exist_ok=True)
AutoModelForImageClassification.register(SttConfig, SttForImageClassification, exist_ok=True)
AutoBackbone.register(SttConfig, SttBackbone, exist_ok=True)

__all__ = ["STT", "CheckpointError", "FlatSynthesizer", "SelfAttention2d", "SttBackbone", "SttConfig",
           "SttForImageClassification", "SttModel", "SttPreTrainedModel", "SttResNet", "create_attn",
           "load_checkpoint", "models", "save_timm_format", "timm_from_pretrained"]
