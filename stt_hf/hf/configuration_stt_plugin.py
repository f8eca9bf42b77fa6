"""SttPluginConfig: the transformers configuration of any timm CNN with attention added by `add_attention`.

Three fields say what the network is: `trunk` (a timm model name), `trunk_args` (its keyword arguments)
and `attention` (the JSON spec of `stt_hf.models.plugin.add_attention`: attn_layer, places, img_size,
options). The same three build the registered timm models `stt_convnext_*` and `stt_efficientnet_*`
(`PLUGGED_MODELS`), so `SttPluginConfig.from_timm_name("stt_convnext_s")` and
`timm.create_model("stt_convnext_s")` are one network.

For captioning, `SttPluginVisionConfig` adds the token sequence's width and position embedding (as
`SttVisionConfig` does for the STT ResNet), and `SttPluginCaptionerConfig` is the VisionEncoderDecoderConfig
whose encoder it is.
"""

import functools
import inspect
import json
import os
from typing import Any, NamedTuple

from timm.models import get_pretrained_cfg
from transformers import AutoConfig, PretrainedConfig, VisionEncoderDecoderConfig
from transformers.backbone_utils import BackboneConfigMixin

from ..layers.create import FIXED_SIZE_ATTN
from ..models.plugin import PLUGGED_MODELS, normalize_places, plugged_attention
from .feature_tokens import check_position_embedding
from .remote_code import save_with_code
from .timm_interop import complete_data_config, image_processor

PLUGIN_AUTO_MAP = {
    "AutoConfig": "configuration_stt_plugin.SttPluginConfig",
    "AutoModel": "modeling_stt_plugin.SttPluginModel",
    "AutoModelForImageClassification": "modeling_stt_plugin.SttPluginForImageClassification",
    "AutoBackbone": "modeling_stt_plugin.SttPluginBackbone",
}
PLUGIN_CODE = ("configuration_stt_plugin", "modeling_stt_plugin")
DATA_KEYS = ("interpolation", "crop_pct", "crop_mode", "mean", "std")


class SttPluginConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of `SttPluginModel`, `SttPluginForImageClassification` and `SttPluginBackbone`.

    Args:
        trunk: the timm model the network starts from (e.g. "convnext_atto", "efficientnet_b0").
        trunk_args: keyword arguments of `timm.create_model(trunk, ...)` (e.g. {"patch_size": 1}).
        attention: what `add_attention` adds, as plain JSON: {"attn_layer", "places", "img_size",
            "options"}; None (or attn_layer "none") for the plain trunk.
        num_stages: how many stages (timm feature_info entries) the trunk has; None counts them. The
            stage_names "stage0", ... are what `SttPluginBackbone`'s out_features / out_indices pick.
        img_size, in_chans: the input the model takes (img_size also sizes the attention modules).
        data_config: preprocessing as in timm's pretrained_cfg (interpolation, crop_pct, crop_mode, mean,
            std); None takes the trunk's.
    """

    model_type = "stt_plugin"
    auto_classes = PLUGIN_AUTO_MAP
    attribute_map = {"num_classes": "num_labels", "num_channels": "in_chans"}

    def __init__(
        self,
        trunk: str = "convnext_atto",
        trunk_args: dict | None = None,
        attention: dict | None = None,
        num_stages: int | None = None,
        img_size: int | list[int] = 224,
        in_chans: int = 3,
        data_config: dict | None = None,
        out_features=None,
        out_indices=None,
        **kwargs,
    ):
        if not isinstance(trunk, str) or not trunk:
            raise ValueError(f"SttPluginConfig.trunk must be a timm model name, got {trunk!r}")
        self.trunk = trunk
        self.trunk_args = {k: list(v) if isinstance(v, tuple) else v for k, v in (trunk_args or {}).items()}
        if attention is not None and attention.get("attn_layer") not in (None, "none"):
            attention = {**attention, "places": normalize_places(attention["places"])}
            size = attention.get("img_size", img_size)
            attention["img_size"] = [size, size] if isinstance(size, int) else list(size)
        else:
            attention = None
        self.attention = attention
        self.img_size = img_size
        self.in_chans = in_chans
        if num_stages is None:
            num_stages = len(_trunk_layout(self.__dict__).feature_info)
        self.num_stages = num_stages
        if data_config is None:
            cfg = get_pretrained_cfg(trunk)
            data_config = {k: getattr(cfg, k) for k in DATA_KEYS} if cfg is not None else {}
        self.data_config = complete_data_config(
            data_config, in_chans, small_input=max(self.input_size()) <= 64
        )
        self.stage_names = [f"stage{i}" for i in range(self.num_stages)]
        super().__init__(**kwargs)
        self.set_output_features_output_indices(out_indices=out_indices, out_features=out_features)

    @classmethod
    def from_timm_name(cls, name: str, **overrides) -> "SttPluginConfig":
        """The config of the registered plugged timm model `name` (e.g. "stt_convnext_s").

        Overrides: the config's fields, `num_classes` for num_labels, and the timm model's attention
        keywords (attn_layer, attn_places, img_size, stt_* options).
        """
        if name not in PLUGGED_MODELS:
            raise ValueError(
                f"Unknown plugged model {name!r}; the registered ones are {sorted(PLUGGED_MODELS)}"
            )
        entry = PLUGGED_MODELS[name]
        requested_size = overrides.get("img_size")  # also the input size of a plain trunk
        attention = plugged_attention(name, overrides)  # pops the attention keywords
        _check_overrides(cls, name, overrides)
        cfg = get_pretrained_cfg(name)
        if "num_classes" in overrides:
            overrides.setdefault("num_labels", overrides.pop("num_classes"))
        img_size = requested_size or (attention["img_size"] if attention else list(cfg.input_size[-2:]))
        kwargs = dict(
            architecture=name,
            trunk=entry["trunk"],
            trunk_args=entry.get("trunk_args", {}),
            attention=attention,
            img_size=img_size,
            num_labels=cfg.num_classes,
            data_config={k: getattr(cfg, k) for k in DATA_KEYS},
        )
        return cls(**{**kwargs, **overrides})

    # timm's side: the registered model this config is a variant of, and timm's config.json for it.
    def registered_name(self) -> str | None:
        """The registered plugged timm model whose keyword arguments rebuild this network, else None (a
        trunk or places no registered name takes)."""
        name = getattr(self, "architecture", None)
        if name not in PLUGGED_MODELS:
            return None
        rebuilt = SttPluginConfig.from_timm_name(name, **self._attention_kwargs())
        network = ("trunk", "trunk_args", "attention")
        return name if all(getattr(self, k) == getattr(rebuilt, k) for k in network) else None

    def _attention_kwargs(self) -> dict[str, Any]:
        """This config's attention as the keywords of a registered plugged timm model."""
        if self.attention is None:
            return {"attn_layer": "none", "img_size": list(self.input_size()[1:])}
        options = {f"stt_{k}": v for k, v in self.attention.get("options", {}).items()}
        return {"attn_layer": self.attention["attn_layer"], "attn_places": self.attention["places"],
                "img_size": self.attention["img_size"], **options}

    def to_timm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `timm.create_model(self.registered_name(), ...)` for this network."""
        if self.registered_name() is None:
            raise ValueError(
                f"this model (trunk {self.trunk!r}, attention {self.attention}) is no variant of a "
                f"registered plugged timm model {sorted(PLUGGED_MODELS)}, so timm cannot build it by name: "
                f"keep it in the transformers format (save_pretrained), or rebuild it with build_plugged"
            )
        kwargs = {**self._attention_kwargs(), "num_classes": self.num_labels}
        return kwargs if self.in_chans == 3 else {**kwargs, "in_chans": self.in_chans}

    def to_timm_config(self) -> dict:
        """timm's config.json for the model; model_args leave out num_classes (TimmWrapper needs that)."""
        # to_timm_kwargs raises, naming why, where no registered name builds this network
        model_args = {k: v for k, v in self.to_timm_kwargs().items() if k != "num_classes"}
        name = self.registered_name()
        cfg = get_pretrained_cfg(name)
        num_classes = self.num_labels
        pretrained_cfg = {
            **self.data_config, "input_size": list(self.input_size()), "num_classes": num_classes,
            "fixed_input_size": self.attn_layer in FIXED_SIZE_ATTN, "first_conv": cfg.first_conv,
            "classifier": cfg.classifier, "license": cfg.license or "apache-2.0",
        }
        out = {"architecture": name, "num_classes": num_classes, "num_features": self.num_features()}
        labels = [self.id2label[i] for i in range(num_classes)] if num_classes and self.id2label else []
        if labels and labels != [f"LABEL_{i}" for i in range(num_classes)]:  # real names, not defaults
            out["label_names"] = labels
        return {**out, "model_args": model_args, "pretrained_cfg": pretrained_cfg}

    # What the run outputs and model cards read, as they read them from an SttConfig.
    def timm_architecture(self) -> str:
        """The registered timm model this config builds, else its trunk's name."""
        return getattr(self, "architecture", None) or self.trunk

    @property
    def attn_layer(self) -> str | None:
        return self.attention["attn_layer"] if self.attention else None

    @property
    def attn_placement(self) -> str:
        places = self.attention["places"] if self.attention else []
        return ", ".join(sorted({p["position"] for p in places})) or "none"

    def placed_stages(self) -> tuple[int, ...]:
        return tuple(sorted({p["stage"] for p in self.attention["places"]})) if self.attention else ()

    @property
    def stt_synth(self) -> str:
        return (self.attention or {}).get("options", {}).get("synth", "dense")

    @property
    def stt_modes(self) -> str:
        return (self.attention or {}).get("options", {}).get("modes", "chw")

    def input_size(self) -> tuple[int, int, int]:
        size = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
        return (self.in_chans, *size)

    @property
    def channels(self) -> list[int]:
        """Each stage's output width."""
        return [info["num_chs"] for info in _trunk_layout(self.__dict__).feature_info]

    def num_features(self) -> int:
        """Channels of the last feature map (`forward_features`; a head conv may widen the last stage)."""
        return _trunk_layout(self.__dict__).num_features

    def image_processor(self):
        """A `BitImageProcessor` doing timm's eval transform for this model."""
        return image_processor(self)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Save config.json, plus the model code (`auto_map`) and a preprocessor config if absent."""
        if not os.path.exists(os.path.join(save_directory, "preprocessor_config.json")):
            os.makedirs(save_directory, exist_ok=True)
            self.image_processor().save_pretrained(save_directory)
        save_with_code(self, super().save_pretrained, save_directory, push_to_hub, PLUGIN_CODE, **kwargs)


class SttPluginVisionConfig(SttPluginConfig):
    r"""Configuration of `SttPluginVisionEncoder`: a plugged timm CNN as an image encoder for text decoders.

    Args (besides SttPluginConfig's):
        hidden_size: width of the output sequence; the last feature map (C channels) is projected to
            it by a linear layer, or kept as is when None or equal to C.
        position_embedding: "learned" (one vector per cell of the feature grid at img_size, interpolated
            for other sizes), "sincos" (fixed 2-D sine-cosine) or "none".
    """

    model_type = "stt_plugin_vision"
    auto_classes = {
        "AutoConfig": "configuration_stt_plugin.SttPluginVisionConfig",
        "AutoModel": "modeling_stt_plugin.SttPluginVisionEncoder",
    }

    def __init__(self, hidden_size: int | None = None, position_embedding: str = "learned", **kwargs):
        check_position_embedding(position_embedding)
        self.position_embedding = position_embedding
        super().__init__(**kwargs)
        # VisionEncoderDecoderModel reads encoder.hidden_size
        self.hidden_size = hidden_size if hidden_size is not None else self.num_features()
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {self.hidden_size!r}")

    def feature_grid(self) -> tuple[int, int]:
        """(H, W) of the last feature map at img_size."""
        _, height, width = self.input_size()
        stride = _trunk_layout(self.__dict__).feature_info[-1]["reduction"]
        return -(-height // stride), -(-width // stride)


class SttPluginCaptionerConfig(VisionEncoderDecoderConfig):
    """A VisionEncoderDecoderConfig whose encoder is an `SttPluginVisionConfig`.

    It stays a "vision-encoder-decoder" config, so `VisionEncoderDecoderModel.from_pretrained` loads a saved
    captioner wherever this package is imported; the `auto_map` it saves lets
    `AutoModelForImageTextToText.from_pretrained(..., trust_remote_code=True)` load it anywhere else.
    """

    auto_classes = {
        "AutoConfig": "configuration_stt_plugin.SttPluginCaptionerConfig",
        "AutoModelForImageTextToText": "modeling_stt_captioner.SttPluginCaptioner",
    }

    def __post_init__(self, **kwargs):
        # The encoder sub-config is resolved through AutoConfig: make "stt_plugin_vision" known to it first,
        # also where this module runs as remote code without the package.
        AutoConfig.register(SttPluginVisionConfig.model_type, SttPluginVisionConfig, exist_ok=True)
        super().__post_init__(**kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        save_with_code(self, super().save_pretrained, save_directory, push_to_hub,
                       modules=("configuration_stt_plugin", "modeling_stt_captioner"), **kwargs)


class TrunkLayout(NamedTuple):
    feature_info: tuple[dict[str, Any], ...]  # timm's, one entry per stage
    num_features: int  # channels of forward_features' output


def _trunk_layout(fields: dict[str, Any]) -> TrunkLayout:
    """The stages and width of the trunk a config names."""
    return _built_layout(fields["trunk"], json.dumps(fields.get("trunk_args", {}), sort_keys=True))


@functools.lru_cache(maxsize=64)
def _built_layout(trunk: str, trunk_args: str) -> TrunkLayout:
    # Built once per trunk, on the meta device (no memory; timm's initialization still runs, slowly).
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(trunk, **json.loads(trunk_args))
    return TrunkLayout(tuple(dict(info) for info in model.feature_info), model.num_features)


def _check_overrides(cls, name: str, overrides: dict[str, Any]) -> None:
    """A keyword that is no field of `cls` would otherwise become an ignored attribute (e.g. a ResNet option
    such as `channels`, which a plugged trunk does not take)."""
    inits = [c.__init__ for c in cls.__mro__ if "__init__" in vars(c)]
    fields = {param for init in inits for param in inspect.signature(init).parameters}
    known = fields | set(PretrainedConfig().to_dict()) | {"num_labels", "num_classes", "architecture"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"{name} does not take {unknown}: a plugged model takes attn_layer, attn_places, img_size, the "
            f"module options as stt_* and the fields of {cls.__name__}"
        )


__all__ = ["SttPluginCaptionerConfig", "SttPluginConfig", "SttPluginVisionConfig"]
