"""SttConfig: the transformers configuration of an STT ResNet.

Its architecture fields are the keyword arguments of the timm models `stt_*`, written out here as plain
annotated fields and validated by the model's own checks (`stt_hf.models.stt_resnet.MODEL_OPTIONS`: name,
default, type, check; a test keeps the two in agreement), so a config that saves is a config that builds.
Besides them, `depth` picks the ResNet and `data_config` the preprocessing. The rest lives beside it: timm
interop and the image processor in `timm_interop.py`, the model code written into saved folders in
`remote_code.py`.
"""

import json
import os
from typing import Any

from transformers import AutoConfig, PretrainedConfig, VisionEncoderDecoderConfig
from transformers.backbone_utils import BackboneConfigMixin

from ..models.stt_resnet import ARCHS, MODEL_KWARGS, check_model_options, placed_stages
from .feature_tokens import check_position_embedding
from .remote_code import save_with_code
from .timm_interop import (
    DATA_KEYS,
    TIMM_CONFIG_KEYS,
    complete_data_config,
    default_data_config,
    from_timm_name,
    image_processor,
    timm_architecture,
    timm_config_fields,
    to_timm_config,
    to_timm_kwargs,
)

# transformers' own config keywords that share a prefix with the STT options (see the misspelling check).
TRANSFORMERS_KEYWORDS = ("attn_implementation",)


class SttConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of `SttModel`, `SttForImageClassification` and `SttBackbone`.

    Use `SttConfig.from_timm_name("stt_resnet18_s", num_labels=10)` for the preset of a registered timm
    model. `num_classes` and `num_channels` are accepted as other names of num_labels and in_chans.

    Args:
        depth: ResNet depth, one of 10, 18, 26, 34, 50, 101, 152 (basic blocks up to 34).
        data_config: preprocessing, timm's pretrained_cfg keys interpolation, crop_pct, crop_mode, mean
            and std. None takes those of the registered timm model this config matches.
        out_features, out_indices: what `SttBackbone` returns, among stage_names
            ("stem", "stage1", ..., "stage4").

    The other fields are the keyword arguments of `stt_hf.models.SttResNet`, declared with their checks in
    `MODEL_OPTIONS` (tests/test_layers_options.py checks that these fields and that declaration agree):
        img_size (default 224): input size the attention modules are built for (their reference feature
            size).
        small_input (default False): 3x3 stride-1 stem without max-pool, for 28-32 px images.
        attn_layer (default 'stt'): the attention module: 'stt' or a baseline; None or 'none' for a plain
            ResNet.
        attn_placement (default 'block'): 'block' (in each residual block), 'stage' (after each stage) or
            'final' (after stage 4).
        attn_stages (default (3, 4)): the stages that get attention ('final' placement: stage 4 whatever
            this says).
        stt_modes (default 'chw'): which modes of the (C, H, W) map get an attention matrix, e.g. 'hw'.
        stt_synth (default 'dense'): 'dense' (from the input), 'random' (learned, input-independent),
            'factorized_random' (low-rank P Q^T) or 'mixture' (learned blend of dense and random).
        stt_heads (default 2): groups the value channels are split into, each with its own attention; must
            divide them.
        stt_reduction (default 16): value channels Cv = max(C // reduction, min_channels).
        stt_min_channels (default 16): the floor of the value channels Cv.
        stt_hidden (default 32): hidden width of the dense synthesizer MLP.
        stt_pool_size (default 4): the channel-mode descriptor pools each channel map to pool_size x
            pool_size.
        stt_rank (default 8): rank k of the factorized random maps.
        stt_temperature (default 1.0): softmax temperature tau.
        stt_resize (default True): other input sizes interpolate the synthesized maps; False makes them an
            error.
        stt_fixed (default False): random maps are a non-trained buffer (Tay et al.'s 'fixed random');
            synth 'random' or 'mixture'.
        in_chans (default 3): input image channels.
        channels (default (64, 128, 256, 512)): widths of the four stages (times the block expansion).
        stem_width (default 64): stem channels.
        stem_type (default ''): '' (one 7x7 conv) or a deep stem of 3x3 convs.
        avg_down (default False): average-pool in the downsampling shortcuts (ResNet-D).
        cardinality (default 1): groups of the bottleneck 3x3 conv (ResNeXt).
        base_width (default 64): bottleneck width per group (ResNeXt).
        output_stride (default 32): total stride; 8 or 16 dilate the last stages.
        global_pool (default 'avg'): the pooling before the classifier.
        drop_rate (default 0.0): dropout before the classifier.
        drop_path_rate (default 0.0): stochastic depth of the residual blocks.
    """

    model_type = "stt"
    # What a saved folder maps to its own code (see `remote_code.save_with_code`).
    auto_classes = {
        "AutoConfig": "configuration_stt.SttConfig",
        "AutoModel": "modeling_stt.SttModel",
        "AutoModelForImageClassification": "modeling_stt.SttForImageClassification",
        "AutoBackbone": "modeling_stt.SttBackbone",
    }
    # timm's names for two standard fields, so either spelling works.
    attribute_map = {"num_classes": "num_labels", "num_channels": "in_chans"}

    depth: int = 18
    data_config: dict[str, Any] | None = None
    # SttResNet's own options
    img_size: int | list[int] | tuple[int, int] = 224
    small_input: bool = False
    attn_layer: str | None = "stt"
    attn_placement: str = "block"
    attn_stages: int | list[int] | tuple[int, ...] = (3, 4)
    # the STT block's options
    stt_modes: str | list[str] = "chw"
    stt_synth: str = "dense"
    stt_heads: int = 2
    stt_reduction: int = 16
    stt_min_channels: int = 16
    stt_hidden: int = 32
    stt_pool_size: int = 4
    stt_rank: int = 8
    stt_temperature: float = 1.0
    stt_resize: bool = True
    stt_fixed: bool = False
    # timm's ResNet options
    in_chans: int = 3
    channels: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    stem_width: int = 64
    stem_type: str = ""
    avg_down: bool = False
    cardinality: int = 1
    base_width: int = 64
    output_stride: int = 32
    global_pool: str = "avg"
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0

    def __post_init__(self, **kwargs):
        for key in TIMM_CONFIG_KEYS:  # derived from the fields; rewritten by every save
            kwargs.pop(key, None)
        # A misspelt option would otherwise become a silently ignored attribute.
        unknown = [k for k in kwargs if k.startswith(("stt_", "attn_")) and k not in TRANSFORMERS_KEYWORDS]
        if unknown:
            raise ValueError(f"SttConfig got unknown option(s) {unknown}; the STT options are "
                             f"{[k for k in MODEL_KWARGS if k.startswith(('stt_', 'attn_'))]}")
        self._validate()
        # JSON has no tuples: keep sequences as lists so a saved and reloaded config compares equal.
        for name in MODEL_KWARGS:
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))
        if self.data_config is None:
            self.data_config = default_data_config(self.timm_architecture())
        self.data_config = complete_data_config(self.data_config, self.in_chans, self.small_input)
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, 5)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None))
        super().__post_init__(**kwargs)

    def _validate(self) -> None:
        """What the model would reject, rejected here: the model's own checks, and the config's fields."""
        if self.depth not in ARCHS:
            raise ValueError(f"SttConfig.depth must be one of {sorted(ARCHS)}, got {self.depth!r}")
        check_model_options(ARCHS[self.depth][0], {k: getattr(self, k) for k in MODEL_KWARGS}, "SttConfig.")
        if not (self.data_config is None or (isinstance(self.data_config, dict)
                                             and set(self.data_config) <= set(DATA_KEYS))):
            raise ValueError(f"SttConfig.data_config must be None or a dict with keys among {DATA_KEYS}, "
                             f"got {self.data_config!r}")

    @classmethod
    def from_timm_name(cls, name: str, **overrides) -> "SttConfig":
        """The config of the registered timm model `name` (e.g. "stt_resnet50"), with overrides.

        See `timm_interop.from_timm_name`; `num_classes` is accepted as timm's spelling of num_labels.
        """
        return from_timm_name(cls, name, **overrides)

    def to_timm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `SttResNet` / `timm.create_model(self.timm_architecture(), ...)`."""
        return to_timm_kwargs(self)

    def timm_architecture(self) -> str:
        """The registered timm model this config is closest to (same depth, most matching options)."""
        return timm_architecture(self)

    def to_timm_config(self) -> dict:
        """timm's config.json for this model."""
        return to_timm_config(self)

    def image_processor(self):
        """A `BitImageProcessor` doing timm's eval transform for this model (see `timm_interop`)."""
        return image_processor(self)

    def placed_stages(self) -> tuple[int, ...]:
        """The stages that get attention (`final` placement: stage 4 whatever `attn_stages` says)."""
        return placed_stages(self.attn_placement, self.attn_stages)

    @property
    def depths(self) -> list[int]:
        """Residual blocks per stage (the name transformers' ResNetConfig and backbone tests use)."""
        return list(ARCHS[self.depth][1])

    def input_size(self) -> tuple[int, int, int]:
        size = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
        return (self.in_chans, *size)

    def num_features(self) -> int:
        return ARCHS[self.depth][0].expansion * self.channels[-1]

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Save config.json, plus the model code (`auto_map`) and a preprocessor config if absent.

        With push_to_hub, the Hub repo gets the same files as the folder.
        """
        self._validate()  # fields may have been set since __post_init__: save only what builds
        if not os.path.exists(os.path.join(save_directory, "preprocessor_config.json")):
            os.makedirs(save_directory, exist_ok=True)
            self.image_processor().save_pretrained(save_directory)
        save_with_code(self, super().save_pretrained, save_directory, push_to_hub, **kwargs)

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        """Write config.json, which doubles as a timm config (`timm_interop.timm_config_fields`)."""
        saved = json.loads(self.to_json_string(use_diff=use_diff))
        with open(json_file_path, "w", encoding="utf-8") as f:
            json.dump({**timm_config_fields(self), **saved}, f, indent=2, sort_keys=True)


class SttVisionConfig(SttConfig):
    r"""Configuration of `SttVisionEncoder`: the STT ResNet as an image encoder for text decoders.

    Args (besides SttConfig's):
        hidden_size: width of the output sequence; the last feature map (C channels) is projected to
            it by a linear layer, or kept as is when None or equal to C.
        position_embedding: "learned" (one vector per cell of the feature grid at img_size, interpolated
            for other sizes), "sincos" (fixed 2-D sine-cosine) or "none".
    """

    model_type = "stt_vision"
    auto_classes = {"AutoConfig": "configuration_stt.SttVisionConfig",
                    "AutoModel": "modeling_stt.SttVisionEncoder"}

    hidden_size: int | None = None
    position_embedding: str = "learned"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_position_embedding(self.position_embedding)
        if self.hidden_size is None:  # VisionEncoderDecoderModel reads encoder.hidden_size
            self.hidden_size = self.num_features()
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {self.hidden_size!r}")

    def feature_grid(self) -> tuple[int, int]:
        """(H, W) of the last feature map at img_size."""
        _, height, width = self.input_size()
        stride = self.output_stride // (4 if self.small_input else 1)
        return -(-height // stride), -(-width // stride)


class SttCaptionerConfig(VisionEncoderDecoderConfig):
    """A VisionEncoderDecoderConfig whose encoder is an `SttVisionConfig`.

    It stays a "vision-encoder-decoder" config, so `VisionEncoderDecoderModel.from_pretrained` loads
    a saved captioner wherever this package is imported; the `auto_map` it saves lets
    `AutoModelForImageTextToText.from_pretrained(..., trust_remote_code=True)` load it anywhere else.
    """

    auto_classes = {"AutoConfig": "configuration_stt.SttCaptionerConfig",
                    "AutoModelForImageTextToText": "modeling_stt_captioner.SttCaptioner"}

    def __post_init__(self, **kwargs):
        # The encoder sub-config is resolved through AutoConfig: make "stt_vision" known to it first,
        # also where this module runs as remote code without the package.
        AutoConfig.register(SttVisionConfig.model_type, SttVisionConfig, exist_ok=True)
        super().__post_init__(**kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        save_with_code(self, super().save_pretrained, save_directory, push_to_hub,
                       modules=("configuration_stt", "modeling_stt_captioner"), **kwargs)


__all__ = ["SttCaptionerConfig", "SttConfig", "SttVisionConfig"]
