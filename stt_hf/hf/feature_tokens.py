"""A CNN's last feature map as the token sequence a text decoder cross-attends to.

`FeatureTokens` is what the captioning encoders share (`SttVisionEncoder` over the STT ResNet,
`SttPluginVisionEncoder` over a plugged timm CNN): each cell of the (B, C, H, W) map is one token,
projected to `hidden_size` when C differs, plus a 2-D position embedding, then layer-normalized.
"""

import torch
from torch import nn
from transformers import initialization as init

POSITION_EMBEDDINGS = ("learned", "sincos", "none")


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (H*W, dim): half the channels encode y, half x."""
    if dim % 4:
        raise ValueError(f"sincos position embedding needs hidden_size divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4) / (dim // 4))
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    y = torch.einsum("n,f->nf", y.flatten().float(), freqs)
    x = torch.einsum("n,f->nf", x.flatten().float(), freqs)
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)


def check_position_embedding(position_embedding: str) -> None:
    if position_embedding not in POSITION_EMBEDDINGS:
        raise ValueError(f"position_embedding must be one of {POSITION_EMBEDDINGS}, "
                         f"got {position_embedding!r}")


class FeatureTokens:
    """Mixin of an encoder `nn.Module` whose config has hidden_size, position_embedding and feature_grid().

    Its layers are the encoder's own attributes (`proj`, `pos_embed`, `norm`), so the state-dict keys sit
    beside the trunk's.
    """

    def _add_token_layers(self, config, channels: int) -> None:
        hidden = config.hidden_size
        self.proj = nn.Linear(channels, hidden) if hidden != channels else nn.Identity()
        height, width = config.feature_grid()
        self.pos_embed = None
        if config.position_embedding == "learned":
            # (1, hidden, H, W), drawn in `_init_position`
            self.pos_embed = nn.Parameter(torch.zeros(1, config.hidden_size, height, width))
        elif config.position_embedding == "sincos":
            sincos_2d(height, width, config.hidden_size)  # fail at build time on a bad hidden_size
        self.norm = nn.LayerNorm(config.hidden_size)

    def _init_position(self, module: nn.Module) -> None:
        """Called from `_init_weights`: the learned grid, unless a checkpoint loaded it."""
        if module is self and self.pos_embed is not None:
            init.trunc_normal_(self.pos_embed, std=0.02)

    def _position(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor | None:
        """(1, H*W, hidden) for a feature grid of H x W, or None."""
        if self.config.position_embedding == "sincos":
            return sincos_2d(height, width, self.config.hidden_size).to(like)[None]
        if self.pos_embed is None:
            return None
        pos = self.pos_embed
        if pos.shape[-2:] != (height, width):  # another input size: resample the learned grid
            pos = nn.functional.interpolate(pos, size=(height, width), mode="bicubic", align_corners=False)
        return pos.flatten(2).transpose(1, 2)

    def _tokens(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> tokens (B, H*W, hidden) and their mean (B, hidden)."""
        _, _, height, width = feature_map.shape
        tokens = self.proj(feature_map.flatten(2).transpose(1, 2))  # (B, H*W, hidden)
        pos = self._position(height, width, tokens)
        if pos is not None:
            tokens = tokens + pos
        tokens = self.norm(tokens)
        return tokens, tokens.mean(dim=1)


__all__ = ["POSITION_EMBEDDINGS", "FeatureTokens", "check_position_embedding", "sincos_2d"]
