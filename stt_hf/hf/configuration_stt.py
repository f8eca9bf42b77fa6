"""SttConfig: the transformers configuration of an STT ResNet.

Every field but `depth` and `data_config` is a keyword argument of the timm models `stt_*`, under the
same name (`num_labels` is timm's `num_classes`), so `timm.create_model(config.timm_architecture(),
**config.to_timm_kwargs())` and the transformers classes build the same network.

Saving a config also writes what makes the checkpoint self-contained: the model code with `auto_map`
(so `trust_remote_code=True` loads it where this package is not installed) and a
`preprocessor_config.json` for `AutoImageProcessor` and `pipeline`.
"""

import ast
import importlib
import importlib.util
import json
import os
import sys
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import get_pretrained_cfg
from transformers import AutoConfig, BitImageProcessor, PretrainedConfig, VisionEncoderDecoderConfig
from transformers.backbone_utils import BackboneConfigMixin

from ..layers.create import ATTN_FACTORIES, FIXED_SIZE_ATTN
from ..layers.stt import MODES, SYNTHS
from ..models.stt_resnet import ARCHS, MODEL_ARGS, MODEL_KWARGS, PLACEMENTS, placed_stages

# Fields passed to timm / SttResNet as keyword arguments, under the same names.
TIMM_KWARGS = MODEL_KWARGS
# Keys of timm's config.json that a saved SttConfig also carries (see `to_timm_config`).
TIMM_CONFIG_KEYS = ("architecture", "num_features", "label_names", "model_args", "pretrained_cfg",
                    "input_size", "first_conv", "classifier", "fixed_input_size", "interpolation", "mean",
                    "std", "crop_pct", "crop_mode", "license")
# Preprocessing, as in timm's pretrained_cfg; the input size always follows img_size and in_chans.
DATA_KEYS = ("interpolation", "crop_pct", "crop_mode", "mean", "std")
STEM_TYPES = ("", "deep", "deep_tiered")

# Remote code: the modules copied into every checkpoint (with the modules they import) and the
# Auto classes the checkpoint maps to them.
REMOTE_CODE_MODULES = ("configuration_stt", "modeling_stt")
AUTO_MAP = {
    "AutoConfig": "configuration_stt.SttConfig",
    "AutoModel": "modeling_stt.SttModel",
    "AutoModelForImageClassification": "modeling_stt.SttForImageClassification",
    "AutoBackbone": "modeling_stt.SttBackbone",
}


class SttConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of `SttModel`, `SttForImageClassification` and `SttBackbone`.

    Args:
        depth: ResNet depth, one of 10, 18, 26, 34, 50, 101, 152 (basic blocks up to 34).
        img_size, small_input, attn_layer, attn_placement, attn_stages, stt_*: as in
            `stt_hf.models.SttResNet`.
        in_chans, channels, stem_width, stem_type, avg_down, cardinality, base_width, output_stride,
            global_pool, drop_rate, drop_path_rate: as in timm's `ResNet`.
        data_config: preprocessing, timm's pretrained_cfg keys interpolation, crop_pct, crop_mode, mean
            and std. None takes those of the registered timm model this config matches.
        out_features, out_indices: what `SttBackbone` returns, among stage_names
            ("stem", "stage1", ..., "stage4").

    Use `SttConfig.from_timm_name("stt_resnet18_s", num_labels=10)` for the preset of a registered
    timm model.
    """

    model_type = "stt"
    auto_classes = AUTO_MAP  # what a saved folder maps to its own code
    # timm's names for two standard fields, so either spelling works.
    attribute_map = {"num_classes": "num_labels", "num_channels": "in_chans"}

    depth: int = 18
    img_size: int | list[int] | tuple[int, int] = 224
    small_input: bool = False
    attn_layer: str | None = "stt"
    attn_placement: str = "block"
    attn_stages: list[int] | tuple[int, ...] = (3, 4)
    stt_modes: str = "chw"
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
    data_config: dict[str, Any] | None = None

    def __post_init__(self, **kwargs):
        for key in TIMM_CONFIG_KEYS:  # derived from the fields; rewritten by every save
            kwargs.pop(key, None)
        # A misspelt option would otherwise become a silently ignored attribute.
        unknown = [k for k in kwargs if k.startswith(("stt_", "attn_"))]
        if unknown:
            raise ValueError(f"SttConfig got unknown option(s) {unknown}; the STT options are "
                             f"{[k for k in TIMM_KWARGS if k.startswith(('stt_', 'attn_'))]}")
        # JSON has no tuples: keep sequences as lists so a saved and reloaded config compares equal.
        for name in ("img_size", "attn_stages", "channels"):
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))
        self._validate()
        if self.data_config is None:
            cfg = get_pretrained_cfg(self.timm_architecture()).to_dict()
            self.data_config = {k: cfg[k] for k in DATA_KEYS}
        self.data_config = self._adapt_data_config(dict(self.data_config))
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, 5)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None))
        super().__post_init__(**kwargs)

    def _validate(self) -> None:
        def check(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"SttConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        check(self.depth in ARCHS, "depth", f"one of {sorted(ARCHS)}")
        def is_list(v, length=None, item=is_int) -> bool:
            return isinstance(v, list) and len(v) == (length or len(v)) > 0 and all(map(item, v))

        size = [self.img_size] * 2 if is_int(self.img_size) else self.img_size
        check(is_list(size, 2, lambda s: is_int(s) and s > 0), "img_size", "a positive int or an (H, W) pair")
        check(self.attn_layer in (None, "none") or self.attn_layer in ATTN_FACTORIES, "attn_layer",
              f"None (or 'none') or one of {sorted(ATTN_FACTORIES)}")
        check(self.attn_placement in PLACEMENTS, "attn_placement", f"one of {PLACEMENTS}")
        check(is_list(self.attn_stages, item=lambda s: is_int(s) and 1 <= s <= 4), "attn_stages",
              "a non-empty list of stage numbers in 1..4")
        check(isinstance(self.stt_modes, str) and len(self.stt_modes) > 0
              and set(self.stt_modes) <= set(MODES), "stt_modes", f"a non-empty string of {''.join(MODES)}")
        check(self.stt_synth in SYNTHS, "stt_synth", f"one of {SYNTHS}")
        for name in ("stt_heads", "stt_reduction", "stt_min_channels", "stt_hidden", "stt_pool_size",
                     "stt_rank", "in_chans", "stem_width", "cardinality", "base_width"):
            check(is_int(getattr(self, name)) and getattr(self, name) > 0, name, "a positive int")
        check(isinstance(self.stt_temperature, (int, float)) and self.stt_temperature > 0,
              "stt_temperature", "a number > 0")
        for name in ("small_input", "stt_resize", "stt_fixed", "avg_down"):
            check(isinstance(getattr(self, name), bool), name, "True or False")
        check(not self.stt_fixed or self.stt_synth in ("random", "mixture"), "stt_fixed",
              "False unless stt_synth is 'random' or 'mixture'")
        check(is_list(self.channels, 4, lambda c: is_int(c) and c > 0), "channels",
              "four positive ints, one per stage")
        check(self.stem_type in STEM_TYPES, "stem_type", f"one of {STEM_TYPES}")
        check(self.output_stride in (8, 16, 32), "output_stride", "8, 16 or 32")
        check(isinstance(self.global_pool, str), "global_pool", "a timm pool type such as 'avg'")
        for name in ("drop_rate", "drop_path_rate"):
            check(isinstance(getattr(self, name), (int, float)) and 0 <= getattr(self, name) < 1, name,
                  "in [0, 1)")
        check(self.data_config is None or (isinstance(self.data_config, dict)
                                           and set(self.data_config) <= set(DATA_KEYS)),
              "data_config", f"None or a dict with keys among {DATA_KEYS}")

    def _adapt_data_config(self, data: dict) -> dict:
        for key in ("mean", "std"):
            value = list(data.get(key) or (IMAGENET_DEFAULT_MEAN if key == "mean" else IMAGENET_DEFAULT_STD))
            if len(value) != self.in_chans:  # e.g. 1-channel input: the average of the RGB statistics
                value = [sum(value) / len(value)] * self.in_chans
            data[key] = value
        crop_pct = data.setdefault("crop_pct", 1.0 if self.small_input else 0.875)
        if not (isinstance(crop_pct, (int, float)) and 0 < crop_pct <= 1):
            raise ValueError(f"SttConfig.data_config['crop_pct'] must be in (0, 1], got {crop_pct!r}")
        data.setdefault("interpolation", "bilinear")
        data.setdefault("crop_mode", "center")
        return data

    @classmethod
    def from_timm_name(cls, name: str, **overrides) -> "SttConfig":
        """The config of the registered timm model `name` (e.g. "stt_resnet50"), with overrides.

        Takes the architecture that the timm entrypoint builds, and num_labels and preprocessing from
        its pretrained_cfg. `num_classes` is accepted as timm's spelling of num_labels.
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
        return cls(**kwargs)

    def to_timm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `SttResNet` / `timm.create_model(self.timm_architecture(), ...)`."""
        kwargs = {k: getattr(self, k) for k in TIMM_KWARGS}
        for k in ("img_size", "attn_stages", "channels"):
            if isinstance(kwargs[k], list):
                kwargs[k] = tuple(kwargs[k])
        if kwargs["attn_layer"] is None:  # timm.create_model drops None arguments; "none" survives
            kwargs["attn_layer"] = "none"
        kwargs["num_classes"] = self.num_labels
        return kwargs

    def timm_architecture(self) -> str:
        """The registered timm model this config is closest to (same depth, most matching options).

        Every option is passed explicitly when building, so any name of the right depth builds the same
        network; the closest one gives the right name and defaults in timm's metadata.
        """
        def score(args: dict) -> int:  # options this config shares with the entry, minus those it changes
            same = [list(v) == getattr(self, k) if isinstance(v, tuple) else getattr(self, k) == v
                    for k, v in args.items()]
            return sum(same) - (len(same) - sum(same))

        candidates = [name for name, args in MODEL_ARGS.items() if args["depth"] == self.depth]
        return max(candidates, key=lambda name: score(MODEL_ARGS[name]))

    def placed_stages(self) -> tuple[int, ...]:
        """The stages that get attention (`final` placement: stage 4 whatever `attn_stages` says)."""
        return placed_stages(self.attn_placement, self.attn_stages)

    def input_size(self) -> tuple[int, int, int]:
        size = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
        return (self.in_chans, *size)

    def image_processor(self) -> BitImageProcessor:
        """A transformers image processor doing timm's eval transform for this model.

        Resize the short side to size / crop_pct, center-crop to size, scale to [0, 1], normalize.
        Images are converted to RGB when the model takes 3 channels, so any PIL mode works.
        """
        _, height, width = self.input_size()
        data = self.data_config
        resample = {"bilinear": 2, "bicubic": 3, "nearest": 0, "lanczos": 1}.get(data["interpolation"], 2)
        return BitImageProcessor(
            size={"shortest_edge": int(min(height, width) / data["crop_pct"])},
            crop_size={"height": height, "width": width},
            resample=resample, image_mean=list(data["mean"]), image_std=list(data["std"]),
            do_convert_rgb=self.in_chans == 3,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Save config.json, plus the model code (`auto_map`) and a preprocessor config if absent."""
        os.makedirs(save_directory, exist_ok=True)
        write_remote_code(save_directory)
        # Map the Auto classes whose code is in the folder (a config loaded alone as remote code has
        # no modeling module to write, though a model saving it may have copied one already).
        self.auto_map = {auto: ref for auto, ref in self.auto_classes.items()
                         if os.path.exists(os.path.join(save_directory, ref.split(".")[0] + ".py"))}
        if not os.path.exists(os.path.join(save_directory, "preprocessor_config.json")):
            self.image_processor().save_pretrained(save_directory)
        super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        # config.json doubles as a timm config in timm's single-dict form (no "pretrained_cfg" key,
        # which would make transformers take the folder for a TimmWrapper one): the same folder or Hub
        # repo then loads with timm.create_model("hf-hub:...") as well as with transformers.
        path = os.path.join(save_directory, "config.json")
        with open(path) as f:
            saved = json.load(f)
        timm_cfg = self.to_timm_config()
        single_dict = {**timm_cfg["pretrained_cfg"], "architecture": timm_cfg["architecture"],
                       "num_features": timm_cfg["num_features"]}
        with open(path, "w") as f:
            json.dump({**single_dict, **saved}, f, indent=2, sort_keys=True)
        if push_to_hub:
            super().save_pretrained(save_directory, push_to_hub=True, **kwargs)

    def num_features(self) -> int:
        return ARCHS[self.depth][0].expansion * self.channels[-1]

    def to_timm_config(self) -> dict:
        """timm's config.json for this model; model_args leave out num_classes (TimmWrapper needs that)."""
        model_args = {k: list(v) if isinstance(v, tuple) else v
                      for k, v in self.to_timm_kwargs().items() if k != "num_classes"}
        num_classes = self.num_labels
        pretrained_cfg = {
            **self.data_config, "input_size": list(self.input_size()), "num_classes": num_classes,
            "fixed_input_size": self.attn_layer in FIXED_SIZE_ATTN, "first_conv": "conv1",
            "classifier": "fc", "license": "apache-2.0",
        }
        out = {"architecture": self.timm_architecture(), "num_classes": num_classes,
               "num_features": self.num_features(), "global_pool": self.global_pool}
        labels = [self.id2label[i] for i in range(num_classes)] if num_classes and self.id2label else []
        if labels and labels != [f"LABEL_{i}" for i in range(num_classes)]:  # real names, not defaults
            out["label_names"] = labels
        return {**out, "model_args": model_args, "pretrained_cfg": pretrained_cfg}


def write_remote_code(folder: str | os.PathLike) -> list[str]:
    """Copy the model code into `folder` as flat sibling modules; return their names.

    transformers' remote-code loader only follows `from .module import name` between files of one
    folder, while this package keeps the network in subpackages. So each module in the closure of
    REMOTE_CODE_MODULES is written with its relative imports rewritten to point at its flat siblings.
    The rewrite is idempotent, so a checkpoint loaded as remote code saves its code again unchanged.
    """
    package = __name__.rpartition(".")[0]
    pending = []
    for name in REMOTE_CODE_MODULES:
        try:
            pending.append(importlib.import_module(f"{package}.{name}"))
        except ImportError:  # remote code loaded for AutoConfig alone has no modeling module
            pass
    sources: dict[str, str] = {}
    seen: dict[str, str] = {}  # flat name -> full module name
    while pending:
        module = pending.pop()
        flat = module.__name__.rpartition(".")[2]
        if flat in seen:
            if seen[flat] != module.__name__:
                raise ValueError(f"Two modules named {flat!r} cannot be flattened into one folder: "
                                 f"{seen[flat]} and {module.__name__}")
            continue
        seen[flat] = module.__name__
        with open(module.__file__, encoding="utf-8") as f:
            source, deps = _flatten_relative_imports(f.read(), module)
        sources[flat] = source
        pending.extend(deps)
    for flat, source in sources.items():
        with open(os.path.join(folder, f"{flat}.py"), "w", encoding="utf-8") as f:
            f.write(source)
    return sorted(sources)


def _flatten_relative_imports(source: str, module) -> tuple[str, list]:
    """Rewrite `from ..pkg.mod import x` as `from .mod import x`; return the source and imported modules."""
    lines = source.splitlines(keepends=True)
    deps = []
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.level > 0]
    for node in sorted(nodes, key=lambda n: n.lineno, reverse=True):
        target = importlib.util.resolve_name("." * node.level + (node.module or ""), module.__package__)
        dep = sys.modules.get(target) or importlib.import_module(target)
        if node.module is None or hasattr(dep, "__path__"):
            raise ValueError(f"{module.__name__} line {node.lineno}: remote code needs relative imports "
                             f"of modules (`from .module import name`), not of packages")
        deps.append(dep)
        indent = lines[node.lineno - 1][: node.col_offset]
        names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
        flat = target.rpartition(".")[2]
        lines[node.lineno - 1: node.end_lineno] = [f"{indent}from .{flat} import {names}\n"]
    return "".join(lines), deps


__all__ = ["SttConfig", "write_remote_code"]


POSITION_EMBEDDINGS = ("learned", "sincos", "none")


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
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding must be one of {POSITION_EMBEDDINGS}, "
                             f"got {self.position_embedding!r}")
        if self.hidden_size is None:  # VisionEncoderDecoderModel reads encoder.hidden_size
            self.hidden_size = self.num_features()
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {self.hidden_size!r}")

    def feature_grid(self) -> tuple[int, int]:
        """(H, W) of the last feature map at img_size."""
        _, height, width = self.input_size()
        stride = self.output_stride // (4 if self.small_input else 1)
        return -(-height // stride), -(-width // stride)


CAPTIONER_AUTO_MAP = {
    "AutoConfig": "configuration_stt.SttCaptionerConfig",
    "AutoModelForImageTextToText": "modeling_stt.SttCaptioner",
}


class SttCaptionerConfig(VisionEncoderDecoderConfig):
    """A VisionEncoderDecoderConfig whose encoder is an `SttVisionConfig`.

    It stays a "vision-encoder-decoder" config, so `VisionEncoderDecoderModel.from_pretrained` loads
    a saved captioner wherever this package is imported; the `auto_map` it saves lets
    `AutoModelForImageTextToText.from_pretrained(..., trust_remote_code=True)` load it anywhere else.
    """

    def __post_init__(self, **kwargs):
        # The encoder sub-config is resolved through AutoConfig: make "stt_vision" known to it first,
        # also where this module runs as remote code without the package.
        AutoConfig.register(SttVisionConfig.model_type, SttVisionConfig, exist_ok=True)
        super().__post_init__(**kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        os.makedirs(save_directory, exist_ok=True)
        write_remote_code(save_directory)
        self.auto_map = dict(CAPTIONER_AUTO_MAP)
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
