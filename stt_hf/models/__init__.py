"""timm model families; importing this registers them with timm."""

from . import stt_convnext, stt_efficientnet  # noqa: F401  (register the plugged families)
from .plugin import add_attention, attention_modules, attention_spec, find_stages
from .stt_resnet import PLACEMENTS, SttResNet, checkpoint_filter_fn

__all__ = ["PLACEMENTS", "SttResNet", "add_attention", "attention_modules", "attention_spec",
           "checkpoint_filter_fn", "find_stages"]
