"""STT ResNets: timm's ResNet with an attention module placed in chosen stages.

The trunk *is* timm's `ResNet` (same module names, same weights), so every timm API works and
ImageNet ResNet weights load into it; the attention modules are added after construction:

- `block`: inside each residual block of the selected stages, on the residual branch after the last
  conv+BN and before the shortcut add (the block's `se` slot, as in timm's seresnet50);
- `stage`: once after the last block of each selected stage;
- `final`: once after the last stage, before global pooling.

The `_s` family is for 28-32 px images: a 3x3 stride-1 stem and no max-pool (total stride 8), and
`final` placement by default (chosen by the small-scale ablation, see docs/results.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import PretrainedCfg, build_model_with_cfg, generate_default_cfgs, is_model, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

# Import modules, not packages: the transformers remote-code bundle keeps only flat sibling modules.
from ..layers.create import ATTN_FACTORIES, FIXED_SIZE_ATTN, create_attn
from ..layers.helpers import value_channels
from ..layers.options import (
    BOOL,
    POSITIVE_INT,
    PROBABILITY,
    STT_SPEC,
    Check,
    Option,
    check_stt_options,
    is_int,
    one_of,
    resolve,
    sequence_of,
)

PLACEMENTS = ("block", "stage", "final")
STAGES = (1, 2, 3, 4)
STEM_TYPES = ("", "deep", "deep_tiered")
GLOBAL_POOLS = ("", "avg", "max", "avgmax", "catavgmax", "fast", "fastavg", "fastmax", "fastavgmax",
                "fastcatavgmax")  # timm's SelectAdaptivePool2d
# ResNets reduce the STT value channels as SE does (C // 16) rather than by the bare block's 2.
STT_DEFAULTS = {"reduction": 16}

# Every SttResNet keyword argument that describes the architecture, declared once, in three groups by
# what reads them: SttResNet itself, the STT block (its options under `stt_`) and timm's ResNet (those the
# transformers config carries). The timm entrypoints' keyword handling, the SttConfig fields and both their
# validations derive from them.
PLACEMENT_OPTIONS: tuple[Option, ...] = (
    Option("img_size", 224, int | list[int] | tuple[int, int],
           Check(lambda v: POSITIVE_INT(v) or sequence_of(POSITIVE_INT, 2)(v),
                 "a positive int or an (H, W) pair of them"),
           "input size the attention modules are built for (their reference feature size)"),
    Option("small_input", False, bool, BOOL, "3x3 stride-1 stem without max-pool, for 28-32 px images"),
    Option("attn_layer", "stt", str | None, one_of((None, "none", *ATTN_FACTORIES)),
           "the attention module: 'stt' or a baseline; None or 'none' for a plain ResNet ('none' survives "
           "timm.create_model, which drops keyword arguments that are None)"),
    Option("attn_placement", "block", str, one_of(PLACEMENTS),
           "'block' (in each residual block), 'stage' (after each stage) or 'final' (after stage 4)"),
    Option("attn_stages", (3, 4), int | list[int] | tuple[int, ...],
           Check(lambda v: v in STAGES if is_int(v) else sequence_of(lambda s: is_int(s) and s in STAGES)(v),
                 "stage numbers in 1..4: an int or a non-empty sequence"),
           "the stages that get attention ('final' placement: stage 4 whatever this says)"),
)
BLOCK_OPTIONS: tuple[Option, ...] = tuple(
    option.renamed("stt_", default=STT_DEFAULTS.get(option.name, option.default)) for option in STT_SPEC)
TRUNK_OPTIONS: tuple[Option, ...] = (
    Option("in_chans", 3, int, POSITIVE_INT, "input image channels"),
    Option("channels", (64, 128, 256, 512), list[int] | tuple[int, ...],
           Check(sequence_of(POSITIVE_INT, 4), "four positive ints, one per stage"),
           "widths of the four stages (times the block expansion)"),
    Option("stem_width", 64, int, POSITIVE_INT, "stem channels"),
    Option("stem_type", "", str, one_of(STEM_TYPES), "'' (one 7x7 conv) or a deep stem of 3x3 convs"),
    Option("avg_down", False, bool, BOOL, "average-pool in the downsampling shortcuts (ResNet-D)"),
    Option("cardinality", 1, int, POSITIVE_INT, "groups of the bottleneck 3x3 conv (ResNeXt)"),
    Option("base_width", 64, int, POSITIVE_INT, "bottleneck width per group (ResNeXt)"),
    Option("output_stride", 32, int, one_of((8, 16, 32)), "total stride; 8 or 16 dilate the last stages"),
    Option("global_pool", "avg", str, one_of(GLOBAL_POOLS), "the pooling before the classifier"),
    Option("drop_rate", 0.0, float, PROBABILITY, "dropout before the classifier"),
    Option("drop_path_rate", 0.0, float, PROBABILITY, "stochastic depth of the residual blocks"),
)
MODEL_OPTIONS: tuple[Option, ...] = (*PLACEMENT_OPTIONS, *BLOCK_OPTIONS, *TRUNK_OPTIONS)
MODEL_KWARGS = tuple(option.name for option in MODEL_OPTIONS)


def placed_stages(placement: str, stages: int | Sequence[int]) -> tuple[int, ...]:
    """The stages that get attention: `final` placement is after stage 4 whatever `stages` says."""
    return (4,) if placement == "final" else ((stages,) if isinstance(stages, int) else tuple(stages))


def check_model_options(block: type[nn.Module], options: Mapping[str, Any], owner: str = "") -> None:
    """Raise ValueError for what SttResNet(block, ..., **options) would reject; `owner` starts the messages.

    `options` holds every name of MODEL_OPTIONS. Besides each value on its own, the STT block needs its
    heads to divide its value channels, which depend on the width of the stage it sits in.
    """
    for option in (*PLACEMENT_OPTIONS, *TRUNK_OPTIONS):
        option.validate(options[option.name], owner)
    check_stt_options(options, prefix="stt_", owner=owner)
    if options["attn_layer"] != "stt":
        return
    for stage in placed_stages(options["attn_placement"], options["attn_stages"]):
        chs = options["channels"][stage - 1] * block.expansion
        try:
            value_channels(chs, options["stt_reduction"], options["stt_min_channels"], options["stt_heads"])
        except ValueError as e:
            raise ValueError(f"{owner}stt_heads does not fit the STT block of stage {stage} "
                             f"({chs} channels): {e}") from None


# Architectures of the registered depths: (block, layers).
ARCHS = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    26: (Bottleneck, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class SttResNet(ResNet):
    """timm ResNet + attention modules at `attn_placement` in `attn_stages`.

    Args:
        block, layers: as in timm's ResNet.
        **kwargs: the options below (declared in `MODEL_OPTIONS`; `stt_*` are those of the STT block,
            `stt_hf.layers.STT`, which the baselines use where they apply), and any other keyword argument
            of timm's ResNet (num_classes, act_layer, ...).

    Options (`tests/test_layers_options.py` checks this list against `MODEL_OPTIONS`; `SttConfig`
    describes each one):
        img_size (default 224): input size the attention modules are built for (their reference feature size).
        small_input (default False): 3x3 stride-1 stem without max-pool, for 28-32 px images.
        attn_layer (default 'stt'): the attention module: 'stt' or a baseline; None or 'none' for a plain
            ResNet ('none' survives timm.create_model, which drops keyword arguments that are None).
        attn_placement (default 'block'): 'block' (in each residual block), 'stage' (after each stage) or
            'final' (after stage 4).
        attn_stages (default (3, 4)): the stages that get attention ('final' placement: stage 4 whatever this
            says).
        the STT block's, also used by the baselines where they apply: stt_modes (default 'chw'),
            stt_synth (default 'dense'), stt_heads (default 2), stt_reduction (default 16),
            stt_min_channels (default 16), stt_hidden (default 32), stt_pool_size (default 4),
            stt_rank (default 8), stt_temperature (default 1.0), stt_resize (default True),
            stt_fixed (default False).
        timm's ResNet's: in_chans (default 3), channels (default (64, 128, 256, 512)),
            stem_width (default 64), stem_type (default ''), avg_down (default False),
            cardinality (default 1), base_width (default 64), output_stride (default 32),
            global_pool (default 'avg'), drop_rate (default 0.0), drop_path_rate (default 0.0).
    """

    def __init__(self, block=BasicBlock, layers: Sequence[int] = (2, 2, 2, 2), *, device=None, dtype=None,
                 **kwargs):
        unknown = sorted(k for k in kwargs if k.startswith(("stt_", "attn_")) and k not in MODEL_KWARGS)
        if unknown:
            raise TypeError(f"SttResNet got unknown option(s) {unknown}; the attention options are "
                            f"{[k for k in MODEL_KWARGS if k.startswith(('stt_', 'attn_'))]}")
        opt = resolve(MODEL_OPTIONS, kwargs)  # kwargs keeps the rest of timm ResNet's arguments
        check_model_options(block, opt)
        trunk = {o.name: opt[o.name] for o in TRUNK_OPTIONS}
        super().__init__(block, layers, **trunk, device=device, dtype=dtype, **kwargs)
        attn_stages = placed_stages(opt["attn_placement"], opt["attn_stages"])
        img_size = opt["img_size"]
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)

        if opt["small_input"]:
            # 3x3 stride-1 stem, no max-pool: keeps 28-32 px inputs at 28-32 px into layer1.
            stem_chs = self.conv1.out_channels if isinstance(self.conv1, nn.Conv2d) else self.bn1.num_features
            self.conv1 = nn.Conv2d(opt["in_chans"], stem_chs, 3, stride=1, padding=1, bias=False,
                                   device=device, dtype=dtype)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
            for info in self.feature_info:
                info["reduction"] = max(info["reduction"] // 4, 1)

        # The block's options under their own names, for whichever attention module is placed.
        options = {o.name.removeprefix("stt_"): opt[o.name] for o in BLOCK_OPTIONS}
        options.update(device=device, dtype=dtype)
        attn_layer = None if opt["attn_layer"] == "none" else opt["attn_layer"]
        self.attn_layer = attn_layer
        self.attn_names: list[str] = []  # where the attention modules sit, in forward order
        if attn_layer is not None:
            for stage in attn_stages:
                info = self.feature_info[stage]  # feature_info[0] is the stem
                feat_size = tuple(math.ceil(s / info["reduction"]) for s in self.img_size)
                layer = getattr(self, f"layer{stage}")
                if opt["attn_placement"] == "block":
                    for i, blk in enumerate(layer):
                        blk.se = create_attn(attn_layer, info["num_chs"], feat_size, **options)
                        self.attn_names.append(f"layer{stage}.{i}.se")
                else:
                    self.attn_names.append(f"layer{stage}.{len(layer)}")
                    layer.add_module(str(len(layer)),
                                     create_attn(attn_layer, info["num_chs"], feat_size, **options))

    @torch.jit.ignore
    def attention_modules(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of every placed attention module, in forward order."""
        return [(name, self.get_submodule(name)) for name in self.attn_names]

    @torch.jit.ignore
    def fuse_for_inference(self) -> SttResNet:
        """Fold each attention block's output BatchNorm into its projection conv; returns self.

        Eval mode only (the fold uses BN's running statistics); outputs stay the same to float
        rounding. The state dict changes (`proj.bias`, no `norm.*`): fuse after loading weights.
        The trunk is left as timm builds it.
        """
        if self.training:
            raise RuntimeError("fuse_for_inference() folds BatchNorm running statistics: call .eval() first")
        for _, module in self.attention_modules():
            if hasattr(module, "fuse_for_inference"):  # timm's se/eca/cbam/gc end in no BatchNorm
                module.fuse_for_inference()
        return self




# Key names of this project's transformers format (stt_hf.hf): timm's `fc.` is `classifier.`, and the
# rest of the network sits under `resnet.`. Declared here, beside the network, so timm's loader and the
# transformers classes share one mapping.
TIMM_HEAD, HF_HEAD, HF_TRUNK = "fc.", "classifier.", "resnet."


def is_hf_state_dict(state_dict: Mapping) -> bool:
    """Whether the keys are this project's transformers format (a trunk under `resnet.`)."""
    return any(k.startswith(HF_TRUNK) for k in state_dict)


def timm_to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(HF_HEAD + k.removeprefix(TIMM_HEAD) if k.startswith(TIMM_HEAD) else HF_TRUNK + k): v
            for k, v in state_dict.items()}


def hf_to_timm_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `timm_to_hf_state_dict`; a key in neither place is a ValueError."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith(HF_HEAD):
            out[TIMM_HEAD + k.removeprefix(HF_HEAD)] = v
        elif k.startswith(HF_TRUNK):
            out[k.removeprefix(HF_TRUNK)] = v
        else:
            raise ValueError(f"Unexpected key {k!r} in an STT transformers checkpoint "
                             f"(expected keys under {HF_TRUNK!r} or {HF_HEAD!r})")
    return out


def checkpoint_filter_fn(state_dict: dict, model: SttResNet) -> dict:
    """Load a plain timm ResNet checkpoint: attention weights it lacks keep the model's own values.

    Also reads this project's transformers-format weights (`resnet.*` + `classifier.*`), so a
    published transformers checkpoint loads with timm's `hf-hub:` too.

    Those values are the identity-at-init ones, so the loaded model computes exactly what the
    plain ResNet computes until it is trained. Any other mismatch is still an error.
    """
    state_dict = state_dict.get("state_dict", state_dict)
    if is_hf_state_dict(state_dict):
        state_dict = hf_to_timm_state_dict(state_dict)
    attn_names = tuple(f"{name}." for name in model.attn_names)
    own = model.state_dict()
    out = dict(state_dict)
    for key, value in own.items():
        if key not in out and key.startswith(attn_names):
            out[key] = value
    return out


def _create(variant: str, pretrained: bool = False, **kwargs) -> SttResNet:
    args = dict(MODEL_ARGS[variant])
    block, layers = ARCHS[args.pop("depth")]
    cfg = kwargs.get("pretrained_cfg")
    if isinstance(cfg, dict) and cfg.get("model_type") == "stt":
        # timm's hf-hub:/local-dir: loader handed us this project's transformers config.json (which
        # doubles as a timm single-dict config): its fields are this model's keyword arguments.
        args.update({k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in MODEL_KWARGS})
        kwargs["pretrained_cfg"] = {k: v for k, v in cfg.items() if k in PretrainedCfg.__dataclass_fields__}
    args.update(kwargs)  # the caller's keyword arguments win
    if args.get("attn_layer", "stt") in FIXED_SIZE_ATTN:
        # timm.create_model passes pretrained_cfg_overlay=None when it has none.
        overlay = args.get("pretrained_cfg_overlay") or {}
        args["pretrained_cfg_overlay"] = {**overlay, "fixed_input_size": True}
    return build_model_with_cfg(SttResNet, variant, pretrained, block=block, layers=layers,
                                pretrained_filter_fn=checkpoint_filter_fn, **args)


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1", "classifier": "fc", "license": "apache-2.0",
        **kwargs,
    }


def _small_cfg(**kwargs) -> dict:
    # For 28-32 px images (Fashion-MNIST, MNIST, CIFAR-size data): resize, no crop.
    return _cfg(num_classes=10, input_size=(3, 32, 32), pool_size=(4, 4), crop_pct=1.0, **kwargs)


def _in1k(timm_name: str) -> dict:
    # ImageNet weights of the matching plain ResNet; STT blocks start at identity.
    return _cfg(hf_hub_id=f"timm/{timm_name}")


default_cfgs = generate_default_cfgs({
    "stt_resnet18.tv_in1k": _in1k("resnet18.tv_in1k"),
    "stt_resnet26.bt_in1k": _in1k("resnet26.bt_in1k"),
    "stt_resnet34.tv_in1k": _in1k("resnet34.tv_in1k"),
    "stt_resnet50.a1_in1k": _in1k("resnet50.a1_in1k"),
    "stt_resnet50_random.a1_in1k": _in1k("resnet50.a1_in1k"),
    "stt_resnet50_mixture.a1_in1k": _in1k("resnet50.a1_in1k"),
    "stt_resnet101.a1h_in1k": _in1k("resnet101.a1h_in1k"),
    "stt_resnet152.a1h_in1k": _in1k("resnet152.a1h_in1k"),
    "stt_resnet10_s": _small_cfg(),
    "stt_resnet18_s": _small_cfg(),
    "stt_resnet18_s_random": _small_cfg(),
    "stt_resnet18_s_mixture": _small_cfg(),
    "stt_resnet34_s": _small_cfg(),
    "stt_resnet50_s": _small_cfg(),
})

# The `_s` family is for 28-32 px inputs: one STT block after the last stage, where the map is smallest
# and one block sees every position (docs/results.md compares the placements at this size).
SMALL = dict(small_input=True, img_size=32, attn_placement="final")
NARROW = dict(channels=(32, 64, 128, 256))
# The 224 px family keeps the SttResNet defaults, STT inside the blocks of stages 3-4 (docs/segmentation.md
# compares the other placements on a 224 px-family backbone).

# What each registered model is: its depth (see ARCHS) and the SttResNet keyword arguments its
# entrypoint sets. The timm entrypoints below and the transformers presets
# (`SttConfig.from_timm_name`) both read this table.
MODEL_ARGS: dict[str, dict] = {
    "stt_resnet18": dict(depth=18),
    "stt_resnet26": dict(depth=26),
    "stt_resnet34": dict(depth=34),
    "stt_resnet50": dict(depth=50),
    "stt_resnet50_random": dict(depth=50, stt_synth="random"),
    "stt_resnet50_mixture": dict(depth=50, stt_synth="mixture"),
    "stt_resnet101": dict(depth=101),
    "stt_resnet152": dict(depth=152),
    "stt_resnet10_s": dict(depth=10, **SMALL, **NARROW),
    "stt_resnet18_s": dict(depth=18, **SMALL),
    "stt_resnet18_s_random": dict(depth=18, **SMALL, stt_synth="random"),
    "stt_resnet18_s_mixture": dict(depth=18, **SMALL, stt_synth="mixture"),
    "stt_resnet34_s": dict(depth=34, **SMALL),
    "stt_resnet50_s": dict(depth=50, **SMALL),
}


def _register(fn):
    # transformers' remote-code loader may import a copy of this file next to an installed stt_hf,
    # or more than once: keep the first registration rather than overwrite it with a warning.
    return fn if is_model(fn.__name__) else register_model(fn)


@_register
def stt_resnet18(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-18 with STT in the blocks of stages 3 and 4."""
    return _create("stt_resnet18", pretrained, **kwargs)


@_register
def stt_resnet26(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-26 (bottleneck) with STT."""
    return _create("stt_resnet26", pretrained, **kwargs)


@_register
def stt_resnet34(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-34 with STT."""
    return _create("stt_resnet34", pretrained, **kwargs)


@_register
def stt_resnet50(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-50 with STT."""
    return _create("stt_resnet50", pretrained, **kwargs)


@_register
def stt_resnet50_random(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-50 with input-independent (random synthesizer) STT."""
    return _create("stt_resnet50_random", pretrained, **kwargs)


@_register
def stt_resnet50_mixture(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-50 with STT mixing dense and random synthesizers."""
    return _create("stt_resnet50_mixture", pretrained, **kwargs)


@_register
def stt_resnet101(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-101 with STT."""
    return _create("stt_resnet101", pretrained, **kwargs)


@_register
def stt_resnet152(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-152 with STT."""
    return _create("stt_resnet152", pretrained, **kwargs)


@_register
def stt_resnet10_s(pretrained=False, **kwargs) -> SttResNet:
    """Half-width ResNet-10 for 28-32 px images, STT after the last stage: small and fast on a CPU."""
    return _create("stt_resnet10_s", pretrained, **kwargs)


@_register
def stt_resnet18_s(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-18 for 28-32 px images, with STT after the last stage."""
    return _create("stt_resnet18_s", pretrained, **kwargs)


@_register
def stt_resnet18_s_random(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-18 for 28-32 px images, with random-synthesizer STT after the last stage."""
    return _create("stt_resnet18_s_random", pretrained, **kwargs)


@_register
def stt_resnet18_s_mixture(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-18 for 28-32 px images, with mixture STT after the last stage."""
    return _create("stt_resnet18_s_mixture", pretrained, **kwargs)


@_register
def stt_resnet34_s(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-34 for 28-32 px images, with STT after the last stage."""
    return _create("stt_resnet34_s", pretrained, **kwargs)


@_register
def stt_resnet50_s(pretrained=False, **kwargs) -> SttResNet:
    """ResNet-50 for 28-32 px images, with STT after the last stage."""
    return _create("stt_resnet50_s", pretrained, **kwargs)
