"""One checkpoint, every loader: timm format <-> transformers format.

- timm format: a folder with timm's `config.json` (architecture, num_classes, model_args,
  pretrained_cfg) and `model.safetensors` holding the timm state dict. It loads with
  `timm.create_model("local-dir:DIR")`, as `hf-hub:` ids once uploaded, and with transformers'
  TimmWrapper (`AutoModelForImageClassification.from_pretrained(DIR)` after `import stt_hf`).
- transformers format: what `SttForImageClassification.save_pretrained` writes: the same tensors
  under `resnet.` (trunk) and `classifier.` (timm's `fc.`).

Plugged models (`stt_convnext_*`, `stt_efficientnet_*`: a timm CNN with `add_attention`) convert the same
way, to and from `SttPluginConfig` folders, whose tensors are timm's under `timm_model.`.

`save_timm_format` writes its own config.json: timm 1.0.31's `save_for_hf` puts num_classes into
model_args, and TimmWrapper then fails with "multiple values for keyword argument 'num_classes'".
Reading weight files safely and the key names of both formats live in `checkpoints`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import safetensors.torch
import timm
from timm.models import get_pretrained_cfg
from torch import nn

from ..models.plugin import PLUGGED_MODELS, build_plugged
from ..models.stt_resnet import MODEL_ARGS, MODEL_KWARGS
from .checkpoints import (
    SAFE_NAME,
    CheckpointError,
    default_file_mode,
    hf_to_timm_state_dict,
    load_checkpoint,
    load_state_dict_strict,
    timm_to_hf_state_dict,
)
from .configuration_stt import DATA_KEYS, SttConfig
from .configuration_stt_plugin import SttPluginConfig
from .modeling_stt import SttForImageClassification, SttModel, SttPreTrainedModel
from .modeling_stt_plugin import SttPluginForImageClassification, SttPluginModel, SttPluginPreTrainedModel
from .modeling_stt_plugin import hf_to_timm_state_dict as plugged_hf_to_timm
from .modeling_stt_plugin import timm_to_hf_state_dict as plugged_timm_to_hf


def config_from_timm_model(model: nn.Module, **overrides) -> SttConfig | SttPluginConfig:
    """The SttConfig (SttPluginConfig for a plugged model) of a model built by
    `timm.create_model("stt_...", **kwargs)`."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture")
    if name is None or not hasattr(model, "_model_args"):
        raise ValueError("Build the model with timm.create_model('stt_...', ...) so its architecture and "
                         "arguments are known, or pass the SttConfig it was built from")
    if name in PLUGGED_MODELS:
        return _plugged_config_from_timm_model(model, name, cfg, **overrides)
    args = {k: v for k, v in model._model_args.items() if k not in ("pretrained_cfg_overlay", "cache_dir")}
    args["num_classes"] = model.num_classes
    args["data_config"] = {k: cfg[k] for k in DATA_KEYS if k in cfg}
    return SttConfig.from_timm_name(name, **{**args, **overrides})


def _plugged_config_from_timm_model(model: nn.Module, name: str, cfg: dict, **overrides) -> SttPluginConfig:
    spec = getattr(model, "attention_spec", None)
    if spec is None:
        attention = {"attn_layer": "none", "img_size": list(cfg["input_size"][-2:])}
    else:
        attention = {"attn_layer": spec["attn_layer"], "attn_places": spec["places"],
                     "img_size": spec["img_size"], **{f"stt_{k}": v for k, v in spec["options"].items()}}
    in_chans = model._model_args.get("in_chans", 3)
    return SttPluginConfig.from_timm_name(name, **{
        **attention, "num_classes": model.num_classes, "in_chans": in_chans,
        "data_config": {k: cfg[k] for k in DATA_KEYS if k in cfg}, **overrides})


def save_timm_format(model: nn.Module, save_directory: str | os.PathLike, *,
                     config: SttConfig | SttPluginConfig | None = None) -> Path:
    """Write `model` as a timm checkpoint folder (config.json + model.safetensors).

    `model` is a timm `SttResNet` or plugged model (from `timm.create_model`, or with the `config` it was
    built from) or a transformers Stt / SttPlugin model. The folder loads with
    `timm.create_model("local-dir:...")`, with `hf-hub:` once uploaded, and with transformers' TimmWrapper
    after `import stt_hf`. A plugged model that no registered name builds is a ValueError, raised before
    anything is written.
    """
    if isinstance(model, SttPluginPreTrainedModel):
        config = model.config
        state = plugged_hf_to_timm(model.state_dict())
    elif isinstance(model, SttPreTrainedModel):
        config = model.config
        state = hf_to_timm_state_dict(model.state_dict())
    else:
        config = config or config_from_timm_model(model)
        state = model.state_dict()
    timm_config = config.to_timm_config()
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    safetensors.torch.save_file(state, save_directory / SAFE_NAME, metadata={"format": "pt"})
    with open(save_directory / "config.json", "w") as f:
        json.dump(timm_config, f, indent=2)
    return save_directory


def _is_hf_format(config_dict: dict) -> bool:
    return config_dict.get("model_type") in (SttConfig.model_type, SttPluginConfig.model_type)


def _read_config(folder: Path) -> dict:
    file = folder / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"No config.json in {folder}")
    with open(file) as f:
        return json.load(f)


# What each kind of saved folder holds, by its config.json's model_type ("timm": timm's own format).
MODEL_KINDS = {"stt": "an STT classifier (stt-hf train)", "timm": "a timm-format STT model",
               "stt_plugin": "a plugged classifier (SttPluginConfig)",
               "upernet": "a segmenter (stt-hf train-seg)",
               "vision-encoder-decoder": "a captioner (stt-hf train-caption)"}


def check_model_folder(path: str | os.PathLike, accepted: tuple[str, ...], flag: str = "--model") -> None:
    """Raise a one-line error when the local folder `path` is not a checkpoint of an `accepted` kind
    (keys of MODEL_KINDS). A path that does not exist is left to the caller (it may be a Hub id)."""
    folder = Path(path)
    if not folder.exists():
        return
    expected = " or ".join(MODEL_KINDS[kind] for kind in accepted)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{flag} {folder}: no config.json there; expected a folder holding "
                                f"{expected}, as save_pretrained or stt-hf convert writes it")
    try:
        cfg = _read_config(folder)
    except ValueError as e:
        raise ValueError(f"{flag} {folder}: config.json is not valid JSON ({e})") from None
    kind = cfg.get("model_type") or ("timm" if "architecture" in cfg else None)
    if kind == "timm" and not str(cfg["architecture"]).startswith("stt_"):
        kind = f"timm {cfg['architecture']}"
    if kind not in accepted:
        held = MODEL_KINDS.get(kind) or (f"a {kind!r} model" if kind else "a config without a model_type")
        raise ValueError(f"{flag} {folder} holds {held}; expected {expected}")


def _config_from_timm_dict(cfg: dict) -> SttConfig | SttPluginConfig:
    pretrained_cfg = cfg.get("pretrained_cfg", {})
    overrides = dict(cfg.get("model_args") or {})
    plugged = cfg["architecture"] in PLUGGED_MODELS  # SttPluginConfig.from_timm_name checks its own keys
    unknown = sorted(set(overrides) - {*MODEL_KWARGS, "num_classes"})
    if unknown and not plugged:  # SttConfig could not carry them: the converted model would differ
        raise ValueError(f"model_args {unknown} of this timm checkpoint have no SttConfig field")
    overrides["num_labels"] = cfg.get("num_classes", pretrained_cfg.get("num_classes", 1000))
    overrides["data_config"] = {k: pretrained_cfg[k] for k in DATA_KEYS if k in pretrained_cfg}
    config = (SttPluginConfig if plugged else SttConfig).from_timm_name(cfg["architecture"], **overrides)
    if cfg.get("label_names"):
        config.id2label = dict(enumerate(cfg["label_names"]))
        config.label2id = {v: k for k, v in config.id2label.items()}
    return config


def timm_to_hf(src: str | os.PathLike, dst: str | os.PathLike, *, model_name: str | None = None,
               allow_pickle: bool = False, **model_args) -> SttPreTrainedModel | SttPluginPreTrainedModel:
    """Convert a timm checkpoint to a transformers checkpoint folder; return the loaded model.

    `src` is a timm-format folder (its config.json names the architecture) or a state dict file or
    folder, which needs `model_name` (e.g. "stt_resnet18_s", or a plugged "stt_convnext_s") and any
    non-default `model_args`. num_classes defaults to what the state dict's classifier holds.
    """
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"No checkpoint at {src}")
    has_config = src.is_dir() and (src / "config.json").is_file()
    if has_config:
        check_model_folder(src, ("timm", "stt", "stt_plugin"), "source")
    if not (has_config or model_name):
        raise ValueError(f"{src} is a bare state dict: pass model_name (the timm model it was built as)")
    if model_name and model_name not in MODEL_ARGS and model_name not in PLUGGED_MODELS:
        raise ValueError(f"model name {model_name!r} is no registered STT model: the STT ResNets are "
                         f"{sorted(MODEL_ARGS)}, the plugged models {sorted(PLUGGED_MODELS)}")
    state = load_checkpoint(src, allow_pickle=allow_pickle)
    architecture = model_name or _read_config(src).get("architecture")
    if architecture in PLUGGED_MODELS:
        model = _plugged_timm_to_hf(state, src, model_name, model_args)
        model.save_pretrained(dst)
        return model.eval()
    if model_name:
        model_args.setdefault("num_classes", state["fc.weight"].shape[0] if "fc.weight" in state else 0)
        config = SttConfig.from_timm_name(model_name, **model_args)
    else:
        config = _config_from_timm_dict(_read_config(src))
    model = SttForImageClassification(config) if config.num_labels > 0 else SttModel(config)
    load_state_dict_strict(model, timm_to_hf_state_dict(state), str(src))
    model.save_pretrained(dst)
    return model.eval()


def _plugged_timm_to_hf(state: dict, src: Path, model_name: str | None,
                        model_args: dict) -> SttPluginPreTrainedModel:
    """A transformers plugged model holding the timm state dict `state` (weights of `model_name`, or of the
    timm-format folder `src`)."""
    if model_name:
        classifier = f"{get_pretrained_cfg(model_name).classifier}.weight"
        model_args.setdefault("num_classes", state[classifier].shape[0] if classifier in state else 0)
        config = SttPluginConfig.from_timm_name(model_name, **model_args)
    else:
        config = _config_from_timm_dict(_read_config(src))
    model = (SttPluginForImageClassification if config.num_labels > 0 else SttPluginModel)(config)
    _check_same_network(plugged_hf_to_timm(model.state_dict()), state, src, config.timm_architecture())
    load_state_dict_strict(model, plugged_timm_to_hf(state), str(src))
    return model


def _check_same_network(own: dict, state: dict, src: Path, name: str) -> None:
    """One line naming how the weights in `src` differ from the network `name` builds (timm's key names)."""
    shapes = [f"{k} has shape {tuple(v.shape)} there, {tuple(own[k].shape)} in the model"
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if shapes or missing or unexpected:
        first = shapes[0] if shapes else (f"{missing[0]!r} is missing" if missing else
                                          f"{unexpected[0]!r} is not in the model")
        raise CheckpointError(f"the weights in {src} are not those of {name} ({first}; {len(shapes)} keys "
                              f"of another shape, {len(missing)} missing, {len(unexpected)} unexpected): "
                              f"pass the model name and number of classes they were trained with")


def hf_to_timm(src: str | os.PathLike, dst: str | os.PathLike, *, allow_pickle: bool = False) -> nn.Module:
    """Convert a transformers checkpoint folder to a timm-format folder; return the timm model."""
    config_dict = _read_config(Path(src))
    if config_dict.get("model_type") == SttPluginConfig.model_type:
        config = SttPluginConfig.from_dict(config_dict)
        config.to_timm_config()  # a plugged model no registered name builds: say so before any work
    else:
        config = SttConfig.from_pretrained(src)
    model = timm_from_pretrained(src, allow_pickle=allow_pickle)
    save_timm_format(model, dst, config=config)
    return model


def timm_from_pretrained(path: str | os.PathLike, *, allow_pickle: bool = False) -> nn.Module:
    """A timm `SttResNet` or plugged model with the weights of a checkpoint folder or Hub repo id, in either
    format.

    A transformers-format folder (from `save_pretrained`) is rebuilt with timm from its config, so no
    one is locked into one library; a timm-format folder goes through `timm.create_model("local-dir:")`.
    """
    spec, path = str(path), Path(path)
    if not path.exists() and (spec.startswith(("/", ".", "~")) or spec.count("/") != 1):
        raise FileNotFoundError(f"No checkpoint folder at {spec} (a Hub id has the form ORG/NAME)")
    if not path.exists():  # a Hub repo id: fetch its config and weights (cached)
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(str(path), allow_patterns=["config.json", "*.safetensors"]))
    check_model_folder(path, ("stt", "stt_plugin", "timm"), "checkpoint")
    config_dict = _read_config(path)
    if not _is_hf_format(config_dict):  # timm's format: its loader, with our pickle policy on the weights
        model = timm.create_model(f"local-dir:{path}", pretrained=False)
        load_state_dict_strict(model, load_checkpoint(path, allow_pickle=allow_pickle), str(path))
        return model.eval()
    if config_dict.get("model_type") == SttPluginConfig.model_type:
        config = SttPluginConfig.from_dict(config_dict)
        name = config.registered_name()
        model = (timm.create_model(name, **config.to_timm_kwargs()) if name else
                 build_plugged(config.trunk, config.attention, config.trunk_args,
                               num_classes=config.num_labels, in_chans=config.in_chans))
        state = plugged_hf_to_timm(load_checkpoint(path, allow_pickle=allow_pickle))
    else:
        config = SttConfig.from_dict(config_dict)
        model = timm.create_model(config.timm_architecture(), **config.to_timm_kwargs())
        state = hf_to_timm_state_dict(load_checkpoint(path, allow_pickle=allow_pickle))
    load_state_dict_strict(model, state, str(path))
    # Preprocessing metadata for timm.data.resolve_data_config(model=model).
    model.pretrained_cfg = {**model.pretrained_cfg, **config.data_config, "num_classes": config.num_labels,
                            "input_size": config.input_size()}
    model.default_cfg = model.pretrained_cfg
    return model.eval()


def check_destination(src: Path, dst: Path, overwrite: bool = False) -> None:
    """Refuse a conversion that would write into its source or replace a model without `overwrite`."""
    if not src.exists():
        raise FileNotFoundError(f"No checkpoint at {src}")
    source, target = src.resolve(), dst.resolve()
    if src.is_dir() and (target == source or source in target.parents):
        raise ValueError(f"the output folder {dst} is the source folder {src} or inside it; converting in "
                         f"place would replace the source's files: give another output folder")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"the output folder {dst} is a file")
    held = sorted(name for name in ("config.json", SAFE_NAME) if (dst / name).exists())
    if held and not overwrite:
        raise ValueError(f"the output folder {dst} already holds a model ({', '.join(held)}); pass "
                         f"--overwrite to replace it, or give another output folder")


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, to: str | None = None,
            model_name: str | None = None, allow_pickle: bool = False, overwrite: bool = False,
            **model_args) -> Path:
    """Convert `src` to the other format (or `to`: "hf" / "timm") in `dst`.

    `dst` is a new folder, or one whose model files `overwrite` allows to replace; never `src` itself or a
    folder inside it. The files get the user's usual mode (safetensors writes 0600).
    """
    src, dst = Path(src), Path(dst)
    check_destination(src, dst, overwrite)
    if to is None:
        is_hf = src.is_dir() and (src / "config.json").is_file() and _is_hf_format(_read_config(src))
        to = "timm" if is_hf else "hf"
    if to == "hf":
        timm_to_hf(src, dst, model_name=model_name, allow_pickle=allow_pickle, **model_args)
    elif to == "timm":
        if not src.is_dir():
            raise ValueError(f"{src}: a transformers checkpoint is a folder written by save_pretrained")
        hf_to_timm(src, dst, allow_pickle=allow_pickle)
    else:
        raise ValueError(f"to must be 'hf' or 'timm', got {to!r}")
    mode = default_file_mode()
    for path in dst.rglob("*"):
        if path.is_file():
            path.chmod(mode)
    return dst


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("src", help="timm-format folder, state dict file, or transformers-format folder")
    parser.add_argument("dst", help="output folder")
    parser.add_argument("--to", choices=("hf", "timm"), default=None,
                        help="target format (default: the other one than src's)")
    parser.add_argument("--model-name", default=None,
                        help="timm model a bare state dict was built as, e.g. stt_resnet18_s")
    parser.add_argument("--num-classes", type=int, default=None, help="classes of a bare state dict")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read .bin/.pth pickle files (with torch.load(weights_only=True))")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in dst")
    return parser


def run_convert(args: argparse.Namespace) -> int:
    """Run the parsed `convert` command; errors propagate to the caller's reporting."""
    if args.num_classes is not None and args.num_classes < 0:
        raise ValueError(f"--num-classes must be 0 (no classifier) or positive, got {args.num_classes}")
    model_args = {} if args.num_classes is None else {"num_classes": args.num_classes}
    dst = convert(args.src, args.dst, to=args.to, model_name=args.model_name, allow_pickle=args.allow_pickle,
                  overwrite=args.overwrite, **model_args)
    print(f"wrote {dst}")
    return 0


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `convert` command to an argparse subparsers object (for `stt-hf convert`)."""
    parser = subparsers.add_parser("convert", help="convert checkpoints between timm and transformers",
                                   description=__doc__.split("\n\n")[0])
    add_convert_arguments(parser).set_defaults(func=run_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The standalone converter: 0 on success, 2 (with the reason on stderr) on a bad input."""
    parser = argparse.ArgumentParser(prog="convert_checkpoint", description=__doc__.split("\n\n")[0])
    try:
        return run_convert(add_convert_arguments(parser).parse_args(argv))
    except (ValueError, OSError) as e:  # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2


__all__ = ["MODEL_KINDS", "add_convert_parser", "check_destination", "check_model_folder",
           "config_from_timm_model", "convert", "hf_to_timm", "load_checkpoint",
           "load_state_dict_strict", "main", "save_timm_format", "timm_from_pretrained", "timm_to_hf"]
