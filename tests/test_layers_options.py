"""The model options, declared once (`STT_SPEC`, `MODEL_OPTIONS`): every surface derives from them.

The sweeps give each option values that are wrong on their own or in combination, and check that the
config (`SttConfig(...)`, `SttConfig.from_timm_name(...)`), the model (`timm.create_model`) and, for the
block's options, `STT` itself all reject them, with one message naming the option, the value and what is
expected. A config that validates is a config that builds.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
import timm
import torch
from timm.models.resnet import ResNet

from stt_hf import STT, SttConfig
from stt_hf.layers.create import STT_OPTIONS
from stt_hf.layers.options import STT_OPTION_NAMES, STT_SPEC
from stt_hf.models.stt_resnet import (
    ARCHS,
    BLOCK_OPTIONS,
    MODEL_ARGS,
    MODEL_KWARGS,
    MODEL_OPTIONS,
    PLACEMENT_OPTIONS,
    TRUNK_OPTIONS,
    SttResNet,
)

NAME = "stt_resnet10_s"  # 32 px, half width: its last stage has 256 channels, so Cv = max(256 // 16, 16) = 16

NOT_POSITIVE_INTS = [0, -1, 1.5, True, "2"]
NOT_BOOLS = ["yes", 1, None]
NOT_PROBABILITIES = [1.0, 1.5, -0.1, "0.1"]

# Values each option rejects on its own. Every option must be listed here.
BAD_VALUES: dict[str, list] = {
    "img_size": [0, [32], (32, 0), (32, 32, 32), "32", 32.0],
    "small_input": NOT_BOOLS,
    "attn_layer": ["dot", "", 1],
    "attn_placement": ["middle", None],
    "attn_stages": [5, 0, [], (1, 5), "34", [True]],
    "stt_modes": ["", "xyz", "hwz", ["c", "x"], 3],
    "stt_synth": ["sparse", "Dense", None],
    "stt_heads": NOT_POSITIVE_INTS,
    "stt_reduction": NOT_POSITIVE_INTS,
    "stt_min_channels": NOT_POSITIVE_INTS,
    "stt_hidden": NOT_POSITIVE_INTS,
    "stt_pool_size": NOT_POSITIVE_INTS,
    "stt_rank": NOT_POSITIVE_INTS,
    "stt_temperature": [0, -1.0, "1", True],
    "stt_resize": NOT_BOOLS,
    "stt_fixed": NOT_BOOLS,
    "in_chans": NOT_POSITIVE_INTS,
    "channels": [[8, 16, 32], (8, 16, 32, 0), "wide", 64],
    "stem_width": NOT_POSITIVE_INTS,
    "stem_type": ["wide", None],
    "avg_down": NOT_BOOLS,
    "cardinality": NOT_POSITIVE_INTS,
    "base_width": NOT_POSITIVE_INTS,
    "output_stride": [4, 64, 32.0],
    "global_pool": ["mean", None],
    "drop_rate": NOT_PROBABILITIES,
    "drop_path_rate": NOT_PROBABILITIES,
}
BAD_CASES = [(name, value) for name, values in BAD_VALUES.items() for value in values]

# Values that are wrong only together, and what the message says.
BAD_COMBINATIONS = [
    (dict(stt_heads=3), r"stt_heads does not fit the STT block of stage 4 \(256 channels\): heads=3 must "
                        r"divide the value channels 16: .* = max\(256 // 16, 16\) = 16"),
    (dict(stt_heads=24, stt_reduction=4), r"stage 4 \(256 channels\): heads=24 must divide the value "
                                          r"channels 64"),
    (dict(attn_placement="block", attn_stages=(3,), stt_heads=3),
     r"stage 3 \(128 channels\): heads=3 must divide the value channels 16"),
    (dict(stt_fixed=True),
     r"stt_fixed=True applies to stt_synth='random' or 'mixture', got stt_synth='dense'"),
    (dict(stt_fixed=True, stt_synth="factorized_random"), r"stt_fixed=True applies to .*'factorized_random'"),
]


def model_error(**kwargs) -> str:
    """The message of SttResNet(...) built as NAME, and of timm.create_model(NAME, ...) (the same one)."""
    args = dict(MODEL_ARGS[NAME])
    block, layers = ARCHS[args.pop("depth")]
    with pytest.raises(ValueError) as error:
        SttResNet(block, layers, **{**args, **kwargs})
    if all(v is not None for v in kwargs.values()):  # timm.create_model drops None keyword arguments
        with pytest.raises(ValueError) as timm_error:
            timm.create_model(NAME, **kwargs)
        assert str(timm_error.value) == str(error.value)
    return str(error.value)


def config_errors(**kwargs) -> list[str]:
    """The message of SttConfig(...) and of SttConfig.from_timm_name(NAME, ...)."""
    messages = []
    for build in (lambda: SttConfig(**{**MODEL_ARGS[NAME], **kwargs}),
                  lambda: SttConfig.from_timm_name(NAME, **kwargs)):
        with pytest.raises(ValueError) as error:
            build()
        messages.append(str(error.value))
    return messages


def test_every_option_is_swept():
    assert set(BAD_VALUES) == set(MODEL_KWARGS)


@pytest.mark.parametrize("name, value", BAD_CASES, ids=[f"{n}={v!r}" for n, v in BAD_CASES])
def test_config_and_model_reject_a_bad_value(name, value):
    message = model_error(**{name: value})
    assert message == f"{name} must be {_option(name).check.expected}, got {value!r}"
    assert config_errors(**{name: value}) == [f"SttConfig.{message}"] * 2


@pytest.mark.parametrize("option", STT_SPEC, ids=lambda o: o.name)
def test_block_rejects_what_the_model_rejects(option):
    """STT's own message is the model's without the `stt_` prefix."""
    for value in BAD_VALUES[f"stt_{option.name}"]:
        with pytest.raises(ValueError) as error:
            STT(32, feat_size=4, **{option.name: value})
        assert f"stt_{error.value}" == model_error(**{f"stt_{option.name}": value})


@pytest.mark.parametrize("kwargs, match", BAD_COMBINATIONS, ids=[str(k) for k, _ in BAD_COMBINATIONS])
def test_config_and_model_reject_a_bad_combination(kwargs, match):
    message = model_error(**kwargs)
    assert re.search(match, message), message
    assert config_errors(**kwargs) == [f"SttConfig.{message}"] * 2


def test_heads_need_to_divide_only_where_stt_is_placed():
    """heads=3 is wrong for the STT block after stage 4, and irrelevant to a baseline or a plain ResNet."""
    for attn_layer in ("se", "self_attn", "none", None):
        config = SttConfig.from_timm_name(NAME, stt_heads=3, attn_layer=attn_layer)
        timm.create_model(NAME, **config.to_timm_kwargs())
    # Stage 3 has 128 channels: Cv = max(128 // 16, 12) = 12, which 3 divides.
    config = SttConfig.from_timm_name(NAME, attn_placement="stage", attn_stages=3, stt_heads=3,
                                      stt_min_channels=12)
    model = timm.create_model(NAME, **config.to_timm_kwargs())
    assert model.attn_names == ["layer3.1"] and model.layer3[1].heads == 3


@pytest.mark.parametrize("kwargs", [
    dict(img_size=(32, 48)), dict(attn_stages=4), dict(attn_stages=[3, 4], attn_placement="stage"),
    dict(stt_modes=("h", "w")), dict(stt_modes="hhw"), dict(stt_temperature=2), dict(stt_synth="mixture",
    stt_fixed=True), dict(global_pool="max"), dict(output_stride=16), dict(drop_rate=0.5),
    dict(channels=[16, 32, 64, 128], stt_min_channels=8, stt_heads=8), dict(attn_layer="none"),
], ids=str)
def test_config_accepts_what_the_model_accepts(kwargs):
    config = SttConfig.from_timm_name(NAME, **kwargs)
    model = timm.create_model(NAME, **kwargs)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    rebuilt = timm.create_model(NAME, **config.to_timm_kwargs())
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_config_only_fields_are_checked():
    with pytest.raises(ValueError, match=r"SttConfig.depth must be one of \[10, 18, .*got 19"):
        SttConfig(depth=19)
    with pytest.raises(ValueError, match=r"SttConfig.data_config must be None or a dict with keys among"):
        SttConfig(data_config={"size": 3})


def test_a_config_changed_after_construction_is_checked_when_saved(tmp_path):
    config = SttConfig.from_timm_name(NAME)
    config.stt_heads = 3
    with pytest.raises(ValueError, match=r"SttConfig.stt_heads does not fit the STT block of stage 4"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_unknown_options_are_named():
    with pytest.raises(ValueError, match=r"SttConfig got unknown option\(s\) \['stt_head'\]"):
        SttConfig(stt_head=4)
    with pytest.raises(TypeError, match=r"SttResNet got unknown option\(s\) \['stt_head'\]"):
        timm.create_model(NAME, stt_head=4)
    with pytest.raises(TypeError, match=r"STT got unknown option\(s\) \['head'\]; its options are"):
        STT(32, head=4)


# ------------------------------------------------------------------------ one declaration, every surface


def test_config_fields_are_the_model_options():
    """Each option is an SttConfig field with the option's default; the model builds from the defaults."""
    fields = {f.name: f.default for f in dataclasses.fields(SttConfig)}
    for option in MODEL_OPTIONS:
        assert fields[option.name] == option.default, option.name
    kwargs = SttConfig().to_timm_kwargs()
    assert {k: kwargs[k] for k in MODEL_KWARGS} == {o.name: o.default for o in MODEL_OPTIONS}


def test_block_options_reach_the_block():
    """The attention factory passes on exactly the block's options, and the model every one of them."""
    assert set(STT_OPTIONS) == {*STT_OPTION_NAMES, "device", "dtype"}
    model = timm.create_model(NAME, stt_synth="factorized_random", stt_modes="wh", stt_heads=4,
                              stt_reduction=4, stt_min_channels=8, stt_hidden=8, stt_pool_size=2,
                              stt_rank=2, stt_temperature=0.5, stt_resize=False)
    stt = model.layer4[-1]
    assert isinstance(stt, STT)
    assert (stt.modes, stt.synth, stt.heads, stt.temperature, stt.resize) == (("w", "h"), "factorized_random",
                                                                             4, 0.5, False)
    assert stt.to_v.out_channels == 64 and stt.synths["h"].random.p.shape == (4, 4, 2)


def test_model_defaults_are_the_block_defaults_but_reduction():
    """The ResNets pass every option on under `stt_`; only reduction differs (16, as SE, not 2)."""
    model_defaults = {o.name: o.default for o in MODEL_OPTIONS}
    changed = {o.name for o in STT_SPEC if model_defaults[f"stt_{o.name}"] != o.default}
    assert changed == {"reduction"} and model_defaults["stt_reduction"] == 16


def test_trunk_defaults_are_timms():
    """The options SttResNet hands to timm's ResNet default to what timm's ResNet defaults to."""
    timm_defaults = {k: p.default for k, p in inspect.signature(ResNet.__init__).parameters.items()}
    for option in TRUNK_OPTIONS:
        assert timm_defaults[option.name] == option.default, option.name
    assert MODEL_OPTIONS == (*PLACEMENT_OPTIONS, *BLOCK_OPTIONS, *TRUNK_OPTIONS)


def test_docstrings_list_every_option():
    for option in STT_SPEC:
        assert f"{option.name} (default {option.default!r})" in STT.__doc__
    for option in MODEL_OPTIONS:
        assert f"{option.name} (default {option.default!r})" in SttResNet.__doc__
        assert f"{option.name} (default {option.default!r})" in SttConfig.__doc__


def _option(name: str):
    return next(o for o in MODEL_OPTIONS if o.name == name)
