"""SttConfig and timm: the registered model a config matches, its keyword arguments, timm's config.json, and
timm's eval transform as a transformers image processor.

Every architecture field of `SttConfig` is a keyword argument of the timm models `stt_*` under the same
name (both come from `MODEL_OPTIONS`; `num_labels` is timm's `num_classes`), so
`timm.create_model(timm_architecture(config), **to_timm_kwargs(config))` and the transformers classes
build the same network. A saved config.json also carries timm's keys (`timm_config_fields`), so one
folder or Hub repo loads with either library.

Preprocessing: a config's `data_config` holds timm's preprocessing keys (interpolation, crop_pct, crop_mode,
mean, std); the input size follows the config's img_size and in_chans. A saved checkpoint carries the
processor as a plain `BitImageProcessor` (preprocessor_config.json), so `AutoImageProcessor` and `pipeline`
load it without remote code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import get_pretrained_cfg

from ..layers.create import FIXED_SIZE_ATTN
from ..models.stt_resnet import MODEL_ARGS, MODEL_KWARGS

if TYPE_CHECKING:
    from transformers import BitImageProcessor

# Preprocessing, as in timm's pretrained_cfg; the input size always follows img_size and in_chans.
DATA_KEYS = ("interpolation", "crop_pct", "crop_mode", "mean", "std")
# Keys of timm's config.json that a saved SttConfig also carries (see `timm_config_fields`).
TIMM_CONFIG_KEYS = ("architecture", "num_features", "label_names", "model_args", "pretrained_cfg",
                    "input_size", "first_conv", "classifier", "fixed_input_size", "interpolation", "mean",
                    "std", "crop_pct", "crop_mode", "license")


def from_timm_name(config_class, name: str, **overrides):
    """The config of the registered timm model `name` (e.g. "stt_resnet50"), with overrides.

    Takes the architecture that the timm entrypoint builds, and num_labels and preprocessing from its
    pretrained_cfg. `num_classes` is accepted as timm's spelling of num_labels.
    """
    if name not in MODEL_ARGS:
        raise ValueError(f"Unknown STT model {name!r}; the registered ones are {sorted(MODEL_ARGS)}")
    cfg = get_pretrained_cfg(name).to_dict()
    if "num_classes" in overrides:
        num_classes = overrides.pop("num_classes")
        if overrides.setdefault("num_labels", num_classes) != num_classes:
            raise ValueError(f"num_classes={num_classes} and num_labels={overrides['num_labels']} "
                             f"disagree; they are two names of one field")
    kwargs = {**MODEL_ARGS[name], "num_labels": cfg["num_classes"],
              "data_config": {k: cfg[k] for k in DATA_KEYS}, **overrides}
    return config_class(**kwargs)


def default_data_config(architecture: str) -> dict[str, Any]:
    """The preprocessing of the registered timm model `architecture`."""
    cfg = get_pretrained_cfg(architecture).to_dict()
    return {k: cfg[k] for k in DATA_KEYS}


def to_timm_kwargs(config) -> dict[str, Any]:
    """Keyword arguments for `SttResNet` / `timm.create_model(timm_architecture(config), ...)`."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in
              ((k, getattr(config, k)) for k in MODEL_KWARGS)}
    if kwargs["attn_layer"] is None:  # timm.create_model drops None arguments; "none" survives
        kwargs["attn_layer"] = "none"
    kwargs["num_classes"] = config.num_labels
    return kwargs


def timm_architecture(config) -> str:
    """The registered timm model the config is closest to (same depth, most matching options).

    Every option is passed explicitly when building, so any name of the right depth builds the same
    network; the closest one gives the right name and defaults in timm's metadata.
    """
    def score(args: dict) -> int:  # options the config shares with the entry, minus those it changes
        same = [list(v) == getattr(config, k) if isinstance(v, tuple) else getattr(config, k) == v
                for k, v in args.items()]
        return sum(same) - (len(same) - sum(same))

    candidates = [name for name, args in MODEL_ARGS.items() if args["depth"] == config.depth]
    return max(candidates, key=lambda name: score(MODEL_ARGS[name]))


def to_timm_config(config) -> dict:
    """timm's config.json for the model; model_args leave out num_classes (TimmWrapper needs that)."""
    model_args = {k: list(v) if isinstance(v, tuple) else v
                  for k, v in to_timm_kwargs(config).items() if k != "num_classes"}
    num_classes = config.num_labels
    pretrained_cfg = {
        **config.data_config, "input_size": list(config.input_size()), "num_classes": num_classes,
        "fixed_input_size": config.attn_layer in FIXED_SIZE_ATTN, "first_conv": "conv1",
        "classifier": "fc", "license": "apache-2.0",
    }
    out = {"architecture": timm_architecture(config), "num_classes": num_classes,
           "num_features": config.num_features(), "global_pool": config.global_pool}
    labels = [config.id2label[i] for i in range(num_classes)] if num_classes and config.id2label else []
    if labels and labels != [f"LABEL_{i}" for i in range(num_classes)]:  # real names, not defaults
        out["label_names"] = labels
    return {**out, "model_args": model_args, "pretrained_cfg": pretrained_cfg}


def timm_config_fields(config) -> dict:
    """What config.json adds so it doubles as a timm config, in timm's single-dict form.

    No "pretrained_cfg" key, which would make transformers take the folder for a TimmWrapper one: the
    same folder or Hub repo then loads with `timm.create_model("hf-hub:...")` and with transformers.
    """
    timm_cfg = to_timm_config(config)
    return {**timm_cfg["pretrained_cfg"], "architecture": timm_cfg["architecture"],
            "num_features": timm_cfg["num_features"]}


RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}  # PIL's codes for timm's names


def complete_data_config(data: dict[str, Any], in_chans: int, small_input: bool) -> dict[str, Any]:
    """`data` with every key filled in, and mean and std with one value per input channel."""
    data = dict(data)
    for key, default in (("mean", IMAGENET_DEFAULT_MEAN), ("std", IMAGENET_DEFAULT_STD)):
        value = list(data.get(key) or default)
        if len(value) != in_chans:  # e.g. 1-channel input: the average of the RGB statistics
            value = [sum(value) / len(value)] * in_chans
        data[key] = value
    crop_pct = data.setdefault("crop_pct", 1.0 if small_input else 0.875)
    if not (isinstance(crop_pct, (int, float)) and 0 < crop_pct <= 1):
        raise ValueError(f"SttConfig.data_config['crop_pct'] must be in (0, 1], got {crop_pct!r}")
    data.setdefault("interpolation", "bilinear")
    data.setdefault("crop_mode", "center")
    return data


def image_processor(config) -> BitImageProcessor:
    """A transformers image processor doing timm's eval transform for the model of `config`.

    Resize the short side to size / crop_pct, center-crop to size, scale to [0, 1], normalize.
    Images are converted to RGB when the model takes 3 channels, so any PIL mode works.
    """
    # Imported here: transformers' image processors load tokenizers, which a config alone does not need.
    from transformers import BitImageProcessor

    _, height, width = config.input_size()
    data = config.data_config
    return BitImageProcessor(
        size={"shortest_edge": int(min(height, width) / data["crop_pct"])},
        crop_size={"height": height, "width": width},
        resample=RESAMPLE.get(data["interpolation"], RESAMPLE["bilinear"]),
        image_mean=list(data["mean"]), image_std=list(data["std"]),
        do_convert_rgb=config.in_chans == 3,
    )


__all__ = ["DATA_KEYS", "TIMM_CONFIG_KEYS", "complete_data_config", "default_data_config", "from_timm_name",
           "image_processor", "timm_architecture", "timm_config_fields", "to_timm_config", "to_timm_kwargs"]
