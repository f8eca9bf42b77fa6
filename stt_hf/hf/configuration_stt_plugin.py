"""SttPluginConfig: the transformers configuration of any timm CNN with attention added by `add_attention`.

Three fields say what the network is: `trunk` (a timm model name), `trunk_args` (its keyword arguments)
and `attention` (the JSON spec of `stt_hf.models.plugin.add_attention`: attn_layer, places, img_size,
options). The same three build the registered timm models `stt_convnext_*` and `stt_efficientnet_*`
(`PLUGGED_MODELS`), so `SttPluginConfig.from_timm_name("stt_convnext_s")` and
`timm.create_model("stt_convnext_s")` are one network.
"""

import os
from typing import Any

from timm.models import get_pretrained_cfg
from transformers import PretrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

from ..models.plugin import PLUGGED_MODELS, normalize_places, plugged_attention
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
        self.num_stages = num_stages if num_stages is not None else len(_feature_info(self.__dict__))
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

    def image_processor(self):
        """A `BitImageProcessor` doing timm's eval transform for this model."""
        return image_processor(self)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Save config.json, plus the model code (`auto_map`) and a preprocessor config if absent."""
        if not os.path.exists(os.path.join(save_directory, "preprocessor_config.json")):
            os.makedirs(save_directory, exist_ok=True)
            self.image_processor().save_pretrained(save_directory)
        save_with_code(self, super().save_pretrained, save_directory, push_to_hub, PLUGIN_CODE, **kwargs)


def _feature_info(fields: dict[str, Any]) -> list:
    """The trunk's feature_info, from a build on the meta device (no memory, no initialization)."""
    import timm
    import torch

    with torch.device("meta"):
        return timm.create_model(fields["trunk"], **fields.get("trunk_args", {})).feature_info


__all__ = ["SttPluginConfig"]
