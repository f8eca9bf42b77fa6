"""Reusable blocks: the STT operator and the baselines it is compared against."""

from .baselines import FlatSynthesizer, SelfAttention2d
from .create import ATTN_FACTORIES, FIXED_SIZE_ATTN, create_attn
from .stt import MODES, STT, SYNTHS

__all__ = ["ATTN_FACTORIES", "FIXED_SIZE_ATTN", "MODES", "STT", "SYNTHS", "FlatSynthesizer",
           "SelfAttention2d", "create_attn"]
