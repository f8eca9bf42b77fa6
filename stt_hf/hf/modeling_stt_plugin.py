"""transformers models around a plugged timm CNN: SttPluginModel, SttPluginForImageClassification,
SttPluginBackbone, and for captioning SttPluginVisionEncoder (`modeling_stt_captioner.SttPluginCaptioner`
pairs it with a text decoder).

Each wraps the very network `timm.create_model("stt_convnext_s")` builds (`build_plugged`: the timm trunk
plus `add_attention`), as `self.timm_model`, with timm's own head: the weights are timm's under a
`timm_model.` prefix, so converting between the two formats is a key prefix.
"""

import os

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithPooling,
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
)

from ..models.plugin import build_plugged
from .checkpoints import check_local_weights
from .configuration_stt_plugin import SttPluginConfig, SttPluginVisionConfig
from .feature_tokens import FeatureTokens

HF_PREFIX = "timm_model."


class SttPluginPreTrainedModel(PreTrainedModel):
    config: SttPluginConfig
    config_class = SttPluginConfig
    base_model_prefix = "timm_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True

    def _build(self, config: SttPluginConfig, num_classes: int) -> nn.Module:
        return build_plugged(
            config.trunk,
            config.attention,
            config.trunk_args,
            num_classes=num_classes,
            in_chans=config.in_chans,
        )

    def _init_weights(self, module: nn.Module) -> None:
        # timm initializes the network when it builds it (attention at identity); transformers' generic
        # init would undo that. Only a classifier that is new or replaced needs initializing here, and
        # the buffers no checkpoint holds (STT's cached pooling matrix) once a load has built them empty.
        if isinstance(module, nn.Linear) and module is self.timm_model.get_classifier():
            module.reset_parameters()
        init_buffers = getattr(module, "init_non_persistent_buffers", None)
        if callable(init_buffers):
            init_buffers()

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs) -> None:
        self.timm_model.set_grad_checkpointing(enable)

    def _check_input(self, pixel_values: torch.Tensor | None) -> None:
        if pixel_values is None or pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.in_chans:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.in_chans}, height, width), got {shape}"
            )

    def _features(self, pixel_values: torch.Tensor, output_hidden_states: bool):
        """(last feature map, every stage's output or None)."""
        self._check_input(pixel_values)
        if output_hidden_states:
            last, hidden = self.timm_model.forward_intermediates(pixel_values)
            return last, tuple(hidden)
        return self.timm_model.forward_features(pixel_values), None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained, reading safetensors only unless `use_safetensors=False`."""
        path = str(pretrained_model_name_or_path)
        if kwargs.get("use_safetensors") is None:
            kwargs["use_safetensors"] = True
            if os.path.isdir(path):
                check_local_weights(os.path.join(path, kwargs.get("subfolder", "")))
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


class SttPluginModel(SttPluginPreTrainedModel):
    """The plugged network without a head: the last feature map and its pooled vector."""

    def __init__(self, config: SttPluginConfig):
        super().__init__(config)
        self.timm_model = self._build(config, num_classes=0)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndNoAttention:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        last, hidden = self._features(pixel_values, output_hidden_states)
        pooled = self.timm_model.forward_head(last, pre_logits=True)
        if not return_dict:
            return (last, pooled) + ((hidden,) if hidden is not None else ())
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=last, pooler_output=pooled, hidden_states=hidden
        )


class SttPluginForImageClassification(SttPluginPreTrainedModel):
    """The plugged network with timm's own classifier head."""

    def __init__(self, config: SttPluginConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.timm_model = self._build(config, num_classes=config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutputWithNoAttention:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        last, hidden = self._features(pixel_values, output_hidden_states)
        logits = self.timm_model.forward_head(last)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        if not return_dict:
            output = (logits,) + ((hidden,) if hidden is not None else ())
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=hidden)


class SttPluginBackbone(BackboneMixin, SttPluginPreTrainedModel):
    """Feature maps of the stages named by config.out_features / out_indices ("stage0", ...)."""

    has_attentions = False

    def __init__(self, config: SttPluginConfig):
        super().__init__(config)
        self.timm_model = self._build(config, num_classes=0)
        self.num_features = [info["num_chs"] for info in self.timm_model.feature_info]
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_input(pixel_values)
        hidden = tuple(self.timm_model.forward_intermediates(pixel_values, intermediates_only=True))
        feature_maps = tuple(hidden[i % len(self.stage_names)] for i in self.out_indices)
        hidden = hidden if output_hidden_states else None
        if not return_dict:
            return (feature_maps,) + ((hidden,) if hidden is not None else ())
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden, attentions=None)


class SttPluginVisionEncoder(FeatureTokens, SttPluginPreTrainedModel):
    """The plugged network as a sequence encoder: its last feature map (B, C, H, W) becomes (B, H*W, hidden),
    one token per cell (`feature_tokens.FeatureTokens`), what VisionEncoderDecoderModel's decoders
    cross-attend to."""

    config: SttPluginVisionConfig
    config_class = SttPluginVisionConfig

    def __init__(self, config: SttPluginVisionConfig):
        super().__init__(config)
        self.timm_model = self._build(config, num_classes=0)
        self._add_token_layers(config, self.timm_model.num_features)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        self._init_position(module)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """last_hidden_state (B, H*W, hidden); pooler_output (B, hidden), the token mean; with
        output_hidden_states, every stage's output. `attentions` is None (VisionEncoderDecoderModel needs
        the field; STT synthesizes its weights, other modules are not asked for theirs)."""
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        last, hidden = self._features(pixel_values, output_hidden_states)
        tokens, pooled = self._tokens(last)
        if not return_dict:
            return (tokens, pooled) + ((hidden,) if hidden is not None else ())
        return BaseModelOutputWithPooling(
            last_hidden_state=tokens, pooler_output=pooled, hidden_states=hidden, attentions=None
        )


def timm_to_hf_state_dict(state_dict: dict) -> dict:
    return {HF_PREFIX + k: v for k, v in state_dict.items()}


def hf_to_timm_state_dict(state_dict: dict) -> dict:
    """The inverse of `timm_to_hf_state_dict`; a key outside `timm_model.` is a ValueError."""
    bad = [k for k in state_dict if not k.startswith(HF_PREFIX)]
    if bad:
        raise ValueError(
            f"Unexpected key {bad[0]!r} in a plugged transformers checkpoint (expected keys "
            f"under {HF_PREFIX!r})"
        )
    return {k.removeprefix(HF_PREFIX): v for k, v in state_dict.items()}


__all__ = [
    "SttPluginBackbone",
    "SttPluginForImageClassification",
    "SttPluginModel",
    "SttPluginPreTrainedModel",
    "SttPluginVisionEncoder",
    "hf_to_timm_state_dict",
    "timm_to_hf_state_dict",
]
