"""Reusable blocks: the STT operator and the baselines it is compared against."""

from .baselines import AxialAttention2d, CrissCrossAttention2d, FlatSynthesizer, SelfAttention2d
from .create import ATTN_FACTORIES, FIXED_SIZE_ATTN, create_attn
from .options import MODES, STT_SPEC, SYNTHS, Option
from .stt import STT

__all__ = ["ATTN_FACTORIES", "FIXED_SIZE_ATTN", "MODES", "STT", "STT_SPEC", "SYNTHS", "AxialAttention2d",
           "CrissCrossAttention2d", "FlatSynthesizer", "Option", "SelfAttention2d", "create_attn"]
