"""timm model families; importing this registers them with timm."""

from .stt_resnet import PLACEMENTS, SttResNet, checkpoint_filter_fn

__all__ = ["PLACEMENTS", "SttResNet", "checkpoint_filter_fn"]
