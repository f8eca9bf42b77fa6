"""Attention as a plug-in: add any attention module of this package to a CNN that is already built.

    model = timm.create_model("convnext_atto", pretrained=True)
    add_attention(model, places={2: "after", 3: "after"}, attn_layer="stt", reduction=16)

A model's *stages* are the entries of timm's `feature_info` (the indices `out_indices` and
`forward_intermediates` use), or the `encoder.stages` of transformers' ResNet, ConvNext and RegNet. Each
place is a stage and a position:

- `after`: one module on the stage's output, appended to the stage's own block list (so timm's
  `forward_features`, `forward_intermediates`, `features_only` and gradient checkpointing all run it);
- `block`: one module in every empty attention slot of the stage's blocks (`se` of timm's ResNet,
  RegNet and EfficientNet blocks, `attn` of ByobNet's), where the family calls it on the residual branch.

Channels and the reference feature size come from the model itself: a dry run at the model's input
size records what reaches each place. Every module starts as the identity and only new state-dict keys
are added, so a pretrained model computes exactly what it did, and its checkpoint still loads strictly
(`fill_attention_keys`). Everything is checked before the model is touched: a bad place or option raises
and leaves it as it was. The places and options are plain JSON (`attention_spec`), so
`add_attention(fresh_trunk, **spec)` rebuilds the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from timm.models.regnet import RegStage
from torch import nn

# Import modules, not packages: the transformers remote-code bundle keeps only flat sibling modules.
from ..layers.create import ATTN_FACTORIES, create_attn
from ..layers.options import STT_OPTION_NAMES, check_stt_options
from .plugin_stages import SLOT_NAMES, PlacementError, Stage, find_stages, has_state

POSITIONS = ("after", "block")
AFTER_NAME = "attn"  # the child a stage's block list gets for `after`
# Called with the model after every `add_attention`: how a higher layer (stt_hf.hf.attached, for
# transformers' own CNNs) keeps what it needs in step, without this module knowing it.
ON_ADDED: list[Callable[[nn.Module], None]] = []


# -------------------------------------------------------------------------------- the places


def normalize_places(places: Any) -> list[dict[str, Any]]:
    """Places as a sorted list of {"stage": int, "position": str}.

    Accepts {stage: position or [positions]} (JSON object keys may be strings), a list of such dicts,
    or a list of (stage, position) pairs.
    """
    if isinstance(places, Mapping):
        items = [(k, p) for k, v in places.items() for p in ([v] if isinstance(v, str) else v)]
    elif isinstance(places, Sequence) and not isinstance(places, str):
        items = [(p["stage"], p["position"]) if isinstance(p, Mapping) else tuple(p) for p in places]
    else:
        raise PlacementError(
            f"places must be a dict {{stage: position}} or a list of "
            f"{{'stage': int, 'position': str}}, got {places!r}"
        )
    out = []
    for stage, position in items:
        if isinstance(stage, str) and stage.isdigit():
            stage = int(stage)
        if not isinstance(stage, int) or isinstance(stage, bool) or position not in POSITIONS:
            raise PlacementError(
                f"A place is a stage index (int) and a position in {POSITIONS}, "
                f"got stage={stage!r}, position={position!r}"
            )
        out.append({"stage": stage, "position": position})
    if not out:
        raise PlacementError("places is empty: name at least one stage")
    return sorted(
        {(p["stage"], p["position"]): p for p in out}.values(),
        key=lambda p: (p["stage"], POSITIONS.index(p["position"])),
    )


def _check_options(attn_layer: str, options: Mapping[str, Any]) -> None:
    if attn_layer not in ATTN_FACTORIES:
        raise PlacementError(f"attn_layer must be one of {sorted(ATTN_FACTORIES)}, got {attn_layer!r}")
    unknown = sorted(set(options) - set(STT_OPTION_NAMES))
    if unknown:
        raise PlacementError(
            f"Unknown attention option(s) {unknown}; the options are {list(STT_OPTION_NAMES)}"
        )
    try:
        check_stt_options(options)
    except ValueError as e:
        raise PlacementError(str(e)) from None


# ------------------------------------------------------------------------------------ the dry run


class _Probe(nn.Module):
    """Stands in an empty slot during the dry run: records the shape of what reaches it."""

    def __init__(self):
        super().__init__()
        self.shape: tuple[int, ...] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shape = tuple(x.shape)
        return x


def _input_spec(model: nn.Module, img_size: Any) -> tuple[int, tuple[int, int]]:
    """(input channels, (H, W)): the first conv's input channels; img_size, else the model's own."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise PlacementError(f"{type(model).__name__} has no Conv2d: add_attention is for CNNs")
    if img_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        config = getattr(model, "config", None)
        if "input_size" in cfg:
            img_size = tuple(cfg["input_size"][-2:])
        elif getattr(config, "image_size", None):
            img_size = config.image_size
        else:
            img_size = 224  # transformers' ResNet and RegNet configs name no size; their checkpoints use 224
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise PlacementError(f"img_size must be a positive int or an (H, W) pair, got {img_size!r}")
    return conv.in_channels, size


@torch.no_grad()
def _dry_run(
    model: nn.Module, stages: list[Stage], places: list[dict], img_size: Any
) -> tuple[tuple[int, int], dict[tuple[int, str], list]]:
    """Shapes reaching each place at the reference size: {(stage, position): [(owner, attr, shape)]}.

    Probes stand in the empty slots and hooks watch the stage outputs; all are removed again, and the
    model's train/eval modes restored, whatever happens.
    """
    in_chans, size = _input_spec(model, img_size)
    param = next(model.parameters(), None)
    x = torch.zeros(
        1,
        in_chans,
        *size,
        device=param.device if param is not None else None,
        dtype=param.dtype if param is not None else None,
    )
    probes: dict[tuple[int, str], list] = {}
    handles, restore = [], []
    for place in places:
        stage = stages[place["stage"]]
        if place["position"] == "block":
            entries = []
            for owner, attr in stage.slots:
                block = stage.module.get_submodule(owner)
                old, probe = getattr(block, attr), _Probe()
                restore.append((block, attr, old, attr in block._modules))
                setattr(block, attr, probe)
                entries.append((owner, attr, probe))
            probes[(stage.index, "block")] = entries
        else:
            seen: list = []
            handles.append(
                stage.module.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.shape))
            )
            probes[(stage.index, "after")] = [("", AFTER_NAME, seen)]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        try:
            model(x)
        except Exception as e:
            raise PlacementError(
                f"The dry run of {type(model).__name__} at {size} failed ({e}); pass the "
                f"input size it takes as img_size"
            ) from e
    finally:
        for handle in handles:
            handle.remove()
        for block, attr, old, registered in reversed(restore):
            if old is None and not registered:
                del block._modules[attr]
                object.__setattr__(block, attr, None)  # back to a plain attribute, as the family had it
            else:
                setattr(block, attr, old)
        for m, training in modes.items():
            m.training = training
    shapes = {}
    for key, entries in probes.items():
        found = []
        for owner, attr, probe in entries:
            shape = probe.shape if isinstance(probe, _Probe) else (tuple(probe[0]) if probe else None)
            if shape is None or len(shape) != 4:
                where = f"stage {key[0]} ({stages[key[0]].name}{'.' + owner if owner else ''}.{attr})"
                raise PlacementError(f"{where} is not reached by a (B, C, H, W) map in the forward pass")
            found.append((owner, attr, shape))
        shapes[key] = found
    return size, shapes


# ---------------------------------------------------------------------------------- the one call


def add_attention(
    model: nn.Module,
    places: Any,
    attn_layer: str = "stt",
    img_size: Any = None,
    options: Mapping[str, Any] | None = None,
    **more_options,
) -> nn.Module:
    """Add `attn_layer` modules to `model` at `places`, in place; returns the model.

    Args:
        model: a built timm CNN (anything with `feature_info`, also `features_only` models) or a
            transformers ResNet / ConvNext / RegNet (classification, base or backbone).
        places: {stage index: "after" | "block" | both as a list}, or a list of {"stage", "position"}
            (see `find_stages(model)` for what each stage offers).
        attn_layer: any name of `stt_hf.layers.ATTN_FACTORIES` ("stt", the baselines, "res_block").
        img_size: the input size the modules are built for; default the model's (timm's pretrained_cfg,
            a transformers config's image_size, else 224).
        options, **more_options: the attention module's options (`stt_hf.layers.STT_SPEC`: heads,
            reduction, ...), as a dict (what `attention_spec` holds) or as keywords.

    Raises PlacementError (a ValueError) before modifying anything, naming what the model offers.
    """
    if getattr(model, "attention_spec", None):
        raise PlacementError(
            f"{type(model).__name__} already has attention added "
            f"({model.attention_spec}); add all places in one call, to the plain trunk"
        )
    places = normalize_places(places)
    options = {**(options or {}), **more_options}
    _check_options(attn_layer, options)
    stages = find_stages(model)
    offered = "; ".join(s.describe() for s in stages)
    for place in places:
        if not 0 <= place["stage"] < len(stages):
            raise PlacementError(
                f"{type(model).__name__} has no stage {place['stage']}; its stages are {offered}"
            )
        stage = stages[place["stage"]]
        if place["position"] not in stage.positions():
            why = (
                f"its blocks have no empty attention slot ({'; '.join(stage.taken[:3])})"
                if stage.taken
                else f"its blocks have no attention slot ({'/'.join(SLOT_NAMES)})"
            )
            if place["position"] == "after":
                why = f"{type(stage.module).__name__} has its own weights and no block list to append to"
            raise PlacementError(
                f"Stage {stage.index} ({stage.name}) of {type(model).__name__} does not take "
                f"position {place['position']!r}: {why}. Its stages are {offered}"
            )
    size, shapes = _dry_run(model, stages, places, img_size)

    # Build every module before inserting any: a width the module rejects leaves the model untouched.
    param = next(model.parameters(), None)
    dd = dict(device=param.device, dtype=param.dtype) if param is not None else {}
    built = []
    for place in places:
        stage = stages[place["stage"]]
        for owner, attr, (_, chs, height, width) in shapes[(stage.index, place["position"])]:
            try:
                module = create_attn(attn_layer, chs, (height, width), **options, **dd)
            except ValueError as e:
                raise PlacementError(
                    f"{attn_layer} does not fit stage {stage.index} ({stage.name}, "
                    f"{chs} channels at {height}x{width}): {e}"
                ) from None
            built.append((stage, place["position"], owner, attr, module))

    names = []
    for stage, position, owner, attr, module in built:
        names.append(_insert(model, stage, position, owner, attr, module))
    model.attention_spec = {
        "attn_layer": attn_layer,
        "places": places,
        "img_size": list(size),
        "options": dict(options),
    }
    model.attn_names = names
    for hook in ON_ADDED:
        hook(model)
    return model


def _insert(model: nn.Module, stage: Stage, position: str, owner: str, attr: str, module: nn.Module) -> str:
    """Put `module` in place; returns its module name in `model`."""
    prefix = _module_name(model, stage.module)
    if position == "block":
        setattr(stage.module.get_submodule(owner) if owner else stage.module, attr, module)
        return ".".join(p for p in (prefix, owner, attr) if p)
    container = stage.container
    if (
        container is stage.module
        and not has_state(container)
        and not isinstance(container, (nn.Sequential, RegStage))
    ):
        # A stateless stage end (an activation, Identity): replaced by (itself, module), no key changes.
        parent_name, _, child = prefix.rpartition(".")
        model.get_submodule(parent_name).add_module(child, nn.Sequential(container, module))
        stage.module = stage.container = model.get_submodule(prefix)
        return f"{prefix}.1"
    if isinstance(container, nn.ModuleList):  # indexed by position: append under the next number
        container.append(module)
        return f"{_module_name(model, container)}.{len(container) - 1}"
    if AFTER_NAME in container._modules:
        raise PlacementError(f"{_module_name(model, container)} already has a child named {AFTER_NAME!r}")
    container.add_module(AFTER_NAME, module)
    return f"{_module_name(model, container)}.{AFTER_NAME}"


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


# ------------------------------------------------------------------------------ after the call


def attention_spec(model: nn.Module) -> dict[str, Any] | None:
    """The JSON-able arguments of `add_attention` that built the model's attention (None if none)."""
    return getattr(model, "attention_spec", None)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every added attention module, in forward order."""
    return [(name, model.get_submodule(name)) for name in getattr(model, "attn_names", [])]


def fill_attention_keys(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A trunk checkpoint completed with the model's own values of the attention keys it lacks.

    Those values are the identity-at-init ones, so `model.load_state_dict(fill_attention_keys(sd, model))`
    is strict about every trunk key and leaves the added modules as the identity.
    """
    prefixes = tuple(f"{name}." for name in getattr(model, "attn_names", []))
    out = dict(state_dict)
    for key, value in model.state_dict().items():
        if key not in out and key.startswith(prefixes):
            out[key] = value
    return out


# --------------------------------------------------------------- registered timm models built this way

# Registered name -> how it is built: {"trunk": timm name, "trunk_args": {...}, "attention": spec}. The
# timm entry points (`create_plugged`) and the transformers config (`SttPluginConfig`) both read it.
PLUGGED_MODELS: dict[str, dict[str, Any]] = {}
# Keyword arguments of a registered model that change its attention rather than its trunk.
ATTENTION_KWARGS = ("attn_layer", "attn_places", "img_size")


def build_plugged(
    trunk: str,
    attention: Mapping[str, Any] | None = None,
    trunk_args: Mapping[str, Any] | None = None,
    **kwargs,
) -> nn.Module:
    """`timm.create_model(trunk, **trunk_args, **kwargs)` with `add_attention(**attention)`: the one
    definition of a plugged network, for timm's entry points and the transformers classes alike."""
    import timm  # the registry: imported here so that this module can be imported while timm registers

    model = timm.create_model(trunk, **{**(trunk_args or {}), **kwargs})
    if attention is not None and attention.get("attn_layer") not in (None, "none"):
        add_attention(model, **attention)
    return model


def plugged_attention(variant: str, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The registered model's attention spec with the caller's overrides popped from `kwargs`:
    attn_layer ("none" for the plain trunk), attn_places, img_size and the module options as `stt_*`."""
    spec = dict(PLUGGED_MODELS[variant]["attention"])
    spec["options"] = dict(spec.get("options", {}))
    if "attn_layer" in kwargs:
        spec["attn_layer"] = kwargs.pop("attn_layer")
    if "attn_places" in kwargs:
        spec["places"] = kwargs.pop("attn_places")
    if "img_size" in kwargs:
        spec["img_size"] = kwargs.pop("img_size")
    for key in [k for k in kwargs if k.startswith("stt_")]:
        spec["options"][key.removeprefix("stt_")] = kwargs.pop(key)
    return None if spec["attn_layer"] in (None, "none") else spec


def create_plugged(
    variant: str, pretrained: bool = False, *, trunk_filter_fn=None, feature_cfg=None, **kwargs
) -> nn.Module:
    """timm's `build_model_with_cfg` for a registered plugged model: pretrained weights are the trunk's
    (its own filter, then the attention keys filled at identity) or a full checkpoint of the model."""
    from timm.models import build_model_with_cfg

    entry = PLUGGED_MODELS[variant]
    attention = plugged_attention(variant, kwargs)
    trunk_args = {**entry.get("trunk_args", {})}

    def filter_fn(state_dict: dict, model: nn.Module) -> dict:
        state_dict = state_dict.get("state_dict", state_dict)
        if trunk_filter_fn is not None and not any(
            k.startswith(tuple(f"{n}." for n in model.attn_names)) for k in state_dict
        ):
            state_dict = trunk_filter_fn(state_dict, model)
        return fill_attention_keys(state_dict, model)

    def build(**build_kwargs) -> nn.Module:
        model = build_plugged(entry["trunk"], attention, trunk_args, **build_kwargs)
        if not hasattr(model, "attn_names"):
            model.attn_names = []
        return model

    build.__name__ = variant
    return build_model_with_cfg(
        build,
        variant,
        pretrained,
        pretrained_filter_fn=filter_fn,
        feature_cfg=dict(flatten_sequential=True, **(feature_cfg or {})),
        **kwargs,
    )


__all__ = [
    "ATTENTION_KWARGS",
    "ON_ADDED",
    "PLUGGED_MODELS",
    "POSITIONS",
    "PlacementError",
    "Stage",
    "add_attention",
    "attention_modules",
    "attention_spec",
    "build_plugged",
    "create_plugged",
    "fill_attention_keys",
    "find_stages",
    "normalize_places",
]
