"""transformers models around the STT ResNet: SttModel, SttForImageClassification, SttBackbone, and for
captioning SttVisionEncoder (`modeling_stt_captioner.SttCaptioner` pairs it with a text decoder).

Each wraps the very `SttResNet` the timm zoo builds (`self.resnet`, built from the config with no
classifier), so the weights are timm's under a `resnet.` prefix and the classifier head is
`classifier`. Nothing of the network is re-implemented here. What transformers adds around a model works
(its common model tests run in tests/test_hf_common.py): activation checkpointing of the stages
(`stages.SttStage`), initialization of every weight and buffer from `_init_weights` (meta-device builds, loads
with missing keys), PEFT (`base_model` is the model itself) and `attn_implementation="eager"`.
"""

import os
from collections import OrderedDict

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithPooling,
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
)

from ..models.stt_resnet import ARCHS, SttResNet
from .checkpoints import CheckpointError, check_local_weights
from .configuration_stt import SttConfig, SttVisionConfig
from .feature_tokens import FeatureTokens

STAGES = ("layer1", "layer2", "layer3", "layer4")


class MismatchedSizesError(CheckpointError, RuntimeError):
    """Weights whose shapes do not fit the model: a RuntimeError, as transformers raises for a size mismatch
    without ignore_mismatched_sizes, and a CheckpointError, as every checkpoint failure here."""


class SttPreTrainedModel(PreTrainedModel):
    config: SttConfig
    config_class = SttConfig
    # There is no separate base model to strip or prepend: every class keeps the network under `resnet.`
    # (timm's weights), so a head's state dict is the base model's plus its own keys, and `base_model` is
    # the model itself, a PreTrainedModel (what PEFT works on). No class has an attribute of this name.
    base_model_prefix = "stt"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True

    def _build_resnet(self, config: SttConfig) -> SttResNet:
        # Imported here: transformers' GradientCheckpointingLayer brings its tokenizers, which `import stt_hf`
        # does not load.
        from .stages import SttStage

        block, layers = ARCHS[config.depth]
        resnet = SttResNet(block, layers, **{**config.to_timm_kwargs(), "num_classes": 0})
        for name in STAGES:  # the same blocks, in a module transformers' checkpointing knows
            setattr(resnet, name, SttStage(OrderedDict(getattr(resnet, name).named_children())))
        return resnet

    def _init_weights(self, module: nn.Module) -> None:
        """Initialize `module`'s own weights and buffers as the network is initialized when built.

        transformers calls this, children before parents, for every module with weights or buffers of its own,
        on a model built on the meta device or for the weights a checkpoint lacks, and leaves what was loaded
        as it is (`transformers.initialization`). Convolutions get timm's ResNet init, norms ones and zeros
        with fresh running statistics, the rest (linear layers, the STT synthesizers) their own
        `reset_parameters`. The blocks above them are `initialize_weights`' part.
        """
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()
        init_buffers = getattr(module, "init_non_persistent_buffers", None)  # STT's cached pooling matrix
        if callable(init_buffers):
            init_buffers()

    def initialize_weights(self) -> None:
        """transformers' initialization (`_init_weights` on each module), then `init_blocks`."""
        super().initialize_weights()
        init_blocks(self)

    def _check_input(self, pixel_values: torch.Tensor | None) -> None:
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.in_chans:
            raise ValueError(f"pixel_values must have shape (batch, {self.config.in_chans}, height, width), "
                             f"got {tuple(pixel_values.shape)}")

    def _features(self, pixel_values: torch.Tensor, output_hidden_states: bool):
        """(last feature map, hidden states: stem and 4 stage outputs, or None)."""
        self._check_input(pixel_values)
        if output_hidden_states:
            last, hidden = self.resnet.forward_intermediates(pixel_values)
            return last, tuple(hidden)
        return self.resnet.forward_features(pixel_values), None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained, reading safetensors only unless `use_safetensors=False`.

        Raises CheckpointError for a pickle-only checkpoint (naming the opt-in), a corrupt or truncated
        safetensors file, and weights of another architecture (naming the first mismatched keys).
        """
        path = str(pretrained_model_name_or_path)
        if kwargs.get("use_safetensors") is None:
            kwargs["use_safetensors"] = True
            if os.path.isdir(path):
                check_local_weights(os.path.join(path, kwargs.get("subfolder", "")))
        output_loading_info = kwargs.pop("output_loading_info", False)
        new_head = kwargs.pop("ignore_mismatched_sizes", False)
        try:
            # Mismatches are judged below, where the error can name them.
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args,
                                                  output_loading_info=True, ignore_mismatched_sizes=True,
                                                  **kwargs)
        except Exception as e:
            if type(e).__name__ == "SafetensorError" or "deserializing header" in str(e):
                raise CheckpointError(f"The safetensors weights of {path!r} are corrupt or truncated "
                                      f"({e}). Save or download the checkpoint again.") from e
            raise
        _check_architecture(model, info, path, new_head)
        return (model, info) if output_loading_info else model


@torch.no_grad()
@init.guard_torch_init_functions()
def init_blocks(model: nn.Module) -> None:
    """The initialization that `_init_weights`, called module by module, cannot do: blocks that set up their
    children's weights.

    Blocks that start as the identity zero their last norm once it is initialized (`zero_init_last`: timm's
    residual blocks, STT and its baselines), and modules without weights of their own, which transformers does
    not call `_init_weights` on in code outside transformers, re-run their `reset_parameters` (timm's
    attention modules). Weights a checkpoint loaded are left as they are (the guarded `torch.nn.init`).
    Models that hold an STT network (the captioner, the segmenter) call this too.
    """
    for module in reversed(list(model.modules())):  # children before parents
        if isinstance(module, PreTrainedModel):
            continue
        owns_tensors = any(True for _ in module.parameters(recurse=False)) or any(
            True for _ in module.buffers(recurse=False))
        if not owns_tensors and hasattr(module, "reset_parameters"):  # else `_init_weights` called it
            module.reset_parameters()
        if hasattr(module, "zero_init_last"):
            module.zero_init_last()


def _check_architecture(model: PreTrainedModel, info: dict, path: str, new_head: bool) -> None:
    """A checkpoint of another architecture is an error, not a half-initialized model.

    Shapes must fit everywhere (MismatchedSizesError); only the classifier may differ, with
    ignore_mismatched_sizes=True (a new head for num_labels). A checkpoint holding part of the trunk must hold
    all of it and nothing else. Keys a checkpoint lacks altogether are initialized by `_init_weights` and
    reported as transformers reports them (its load report, `output_loading_info`): the classifier of a
    base-model checkpoint, or every weight of a checkpoint that has none of this network's (transformers'
    `from_pretrained(None, config=..., state_dict={})`).
    """
    shapes = model.state_dict()
    mismatched = [f"{key} has shape {tuple(ckpt)} in the checkpoint, {tuple(own)} in the model"
                  for key, ckpt, own in sorted(info.get("mismatched_keys") or [])
                  if not (new_head and key.startswith("classifier."))]
    missing = sorted(key for key in info.get("missing_keys") or [] if key.startswith("resnet."))
    trunk_loaded = any(key.startswith("resnet.") and key not in missing for key in shapes)
    problems = mismatched + [f"{key} {tuple(shapes[key].shape)} is missing from the checkpoint"
                             for key in (missing if trunk_loaded else [])]
    problems += [f"{key} is in the checkpoint but not in the model"
                 for key in sorted(info.get("unexpected_keys") or []) if key.startswith("resnet.")]
    if problems:
        shown = "\n  ".join(problems[:5])
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        hint = ("\nTo replace the classifier, pass num_labels=... and ignore_mismatched_sizes=True."
                if not new_head and all(p.startswith("classifier.") for p in problems) else "")
        error = MismatchedSizesError if mismatched else CheckpointError
        raise error(f"The checkpoint {path!r} does not fit {type(model).__name__} built from "
                    f"its config ({len(problems)} mismatched keys):\n  {shown}{more}{hint}")


class SttModel(SttPreTrainedModel):
    """The STT ResNet without a head: the last feature map and its pooled vector."""

    def __init__(self, config: SttConfig):
        super().__init__(config)
        self.resnet = self._build_resnet(config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> BaseModelOutputWithPoolingAndNoAttention:
        """last_hidden_state (B, C, H, W); pooler_output (B, C) after global pooling; with
        output_hidden_states, the stem output and each stage's output."""
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        last, hidden = self._features(pixel_values, output_hidden_states)
        pooled = self.resnet.forward_head(last, pre_logits=True)
        if not return_dict:
            return (last, pooled) + ((hidden,) if hidden is not None else ())
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=last, pooler_output=pooled, hidden_states=hidden)


class SttForImageClassification(SttPreTrainedModel):
    """The STT ResNet with a linear classifier on the pooled features (timm's `fc`)."""

    def __init__(self, config: SttConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.resnet = self._build_resnet(config)
        self.classifier = (nn.Linear(self.resnet.num_features, config.num_labels) if config.num_labels > 0
                           else nn.Identity())
        self.post_init()

    def forward(self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> ImageClassifierOutputWithNoAttention:
        """logits (B, num_labels); with labels, the loss of config.problem_type (single-label
        cross-entropy, multi-label BCE or regression MSE, inferred from labels when unset)."""
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        last, hidden = self._features(pixel_values, output_hidden_states)
        logits = self.classifier(self.resnet.forward_head(last, pre_logits=True))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        if not return_dict:
            output = (logits,) + ((hidden,) if hidden is not None else ())
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=hidden)


class SttBackbone(BackboneMixin, SttPreTrainedModel):
    """Feature maps of the stages named by config.out_features / out_indices (stem, stage1..4)."""

    has_attentions = False

    def __init__(self, config: SttConfig):
        super().__init__(config)
        self.resnet = self._build_resnet(config)
        self.num_features = [info["num_chs"] for info in self.resnet.feature_info]
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> BackboneOutput:
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_input(pixel_values)
        indices = [i % len(self.stage_names) for i in self.out_indices]
        if output_hidden_states:
            hidden = tuple(self.resnet.forward_intermediates(pixel_values, intermediates_only=True))
            feature_maps = tuple(hidden[i] for i in indices)
        else:  # only what is asked for, stopping after the last stage needed
            hidden = None
            feature_maps = tuple(self.resnet.forward_intermediates(
                pixel_values, indices=indices, intermediates_only=True, stop_early=True))
        if not return_dict:
            return (feature_maps,) + ((hidden,) if hidden is not None else ())
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden, attentions=None)


class SttVisionEncoder(FeatureTokens, SttPreTrainedModel):
    """The STT ResNet as a sequence encoder: its last feature map (B, C, H, W) becomes (B, H*W, hidden).

    Each cell of the map is one token: optionally projected to config.hidden_size, plus a 2-D position
    embedding, then layer-normalized (`feature_tokens.FeatureTokens`). This is what
    VisionEncoderDecoderModel's decoders cross-attend to.
    """

    config: SttVisionConfig
    config_class = SttVisionConfig

    def __init__(self, config: SttVisionConfig):
        super().__init__(config)
        self.resnet = self._build_resnet(config)
        self._add_token_layers(config, self.resnet.num_features)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        self._init_position(module)

    def forward(self, pixel_values: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> BaseModelOutputWithPooling:
        """last_hidden_state (B, H*W, hidden); pooler_output (B, hidden), the token mean; with
        output_hidden_states, the stem and stage feature maps. There are no attention weights to return
        (STT synthesizes them), so `attentions` is None."""
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        last, hidden = self._features(pixel_values, output_hidden_states)
        tokens, pooled = self._tokens(last)
        if not return_dict:
            return (tokens, pooled) + ((hidden,) if hidden is not None else ())
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=pooled,
                                          hidden_states=hidden, attentions=None)


__all__ = ["CheckpointError", "MismatchedSizesError", "SttBackbone", "SttForImageClassification", "SttModel",
           "SttPreTrainedModel", "SttVisionEncoder", "init_blocks"]
