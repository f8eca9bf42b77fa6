"""stt-hf: STT (Synthesizing Tensor Transformations) attention for timm and Hugging Face models.

`import stt_hf` registers the `stt_*` models with timm.
"""

from . import models
from .layers import STT, FlatSynthesizer, SelfAttention2d, create_attn
from .models import SttResNet

__version__ = "0.1.0"

__all__ = ["STT", "FlatSynthesizer", "SelfAttention2d", "SttResNet", "create_attn", "models"]
