"""The options of the STT block, declared once.

An `Option` is one keyword argument: its name, default, type, the check its values must pass and which
layer reads it. `STT_SPEC` declares the block's options. Everything else derives from it: the block's
argument checks (`STT`), the attention factory's filtering (`create_attn`), the `stt_*` keyword arguments
of the ResNets (`stt_hf.models.stt_resnet.MODEL_OPTIONS`, which adds the ResNet's own options) and the
fields and validation of the transformers config (`SttConfig`). So an option is added in one place, and a
value that one of them rejects, all of them reject, with the same message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

MODES = ("c", "h", "w")
SYNTHS = ("dense", "random", "factorized_random", "mixture")


@dataclass(frozen=True)
class Check:
    """A test of one value, and what it accepts in words (for the error message)."""

    test: Callable[[Any], bool]
    expected: str

    def __call__(self, value: Any) -> bool:
        return self.test(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def one_of(choices: Iterable) -> Check:
    choices = tuple(choices)
    return Check(lambda v: any(v == c and type(v) is type(c) for c in choices), f"one of {choices}")


def sequence_of(item: Callable[[Any], bool], length: int | None = None) -> Callable[[Any], bool]:
    """A list or tuple (JSON gives lists, Python code tuples) of `length` items passing `item`."""
    return lambda v: (isinstance(v, (list, tuple)) and len(v) == (length or len(v)) > 0
                      and all(item(x) for x in v))


POSITIVE_INT = Check(lambda v: is_int(v) and v > 0, "a positive int")
POSITIVE_NUMBER = Check(lambda v: is_number(v) and v > 0, "a number > 0")
BOOL = Check(lambda v: isinstance(v, bool), "True or False")
PROBABILITY = Check(lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")
# A string such as "hw" or a sequence of mode names; repeats are dropped when the block is built.
MODES_CHECK = Check(lambda v: isinstance(v, (str, list, tuple)) and len(v) > 0
                    and all(isinstance(m, str) and m in MODES for m in v),
                    f"a non-empty subset of {MODES}, as a string such as 'hw' or a sequence")


@dataclass(frozen=True)
class Option:
    """One keyword argument of a layer.

    Args:
        name: the keyword.
        default: its value when not given.
        type: the annotation of the transformers config field.
        check: what a valid value is.
        doc: what it does, one line.
    """

    name: str
    default: Any
    type: Any
    check: Check
    doc: str

    def validate(self, value: Any, owner: str = "") -> None:
        """ValueError naming `owner` + the option, what was given and what is expected."""
        if not self.check(value):
            raise ValueError(f"{owner}{self.name} must be {self.check.expected}, got {value!r}")

    def renamed(self, prefix: str, **changes) -> Option:
        """This option under `prefix + name`, e.g. `stt_heads` for the ResNet that passes it on."""
        return replace(self, name=prefix + self.name, **changes)


STT_SPEC: tuple[Option, ...] = (
    Option("modes", "chw", str | list[str], MODES_CHECK,
           "which modes of the (C, H, W) map get an attention matrix, e.g. 'hw'"),
    Option("synth", "dense", str, one_of(SYNTHS),
           "'dense' (from the input), 'random' (learned, input-independent), 'factorized_random' "
           "(low-rank P Q^T) or 'mixture' (learned blend of dense and random)"),
    Option("heads", 2, int, POSITIVE_INT,
           "groups the value channels are split into, each with its own attention; must divide them"),
    Option("reduction", 2, int, POSITIVE_INT, "value channels Cv = max(C // reduction, min_channels)"),
    Option("min_channels", 16, int, POSITIVE_INT, "the floor of the value channels Cv"),
    Option("hidden", 32, int, POSITIVE_INT, "hidden width of the dense synthesizer MLP"),
    Option("pool_size", 4, int, POSITIVE_INT,
           "the channel-mode descriptor pools each channel map to pool_size x pool_size"),
    Option("rank", 8, int, POSITIVE_INT, "rank k of the factorized random maps"),
    Option("temperature", 1.0, float, POSITIVE_NUMBER, "softmax temperature tau"),
    Option("resize", True, bool, BOOL,
           "other input sizes interpolate the synthesized maps; False makes them an error"),
    Option("fixed", False, bool, BOOL,
           "random maps are a non-trained buffer (Tay et al.'s 'fixed random'); synth 'random' or 'mixture'"),
)
STT_OPTION_NAMES = tuple(option.name for option in STT_SPEC)


def check_stt_options(values: Mapping[str, Any], prefix: str = "", owner: str = "") -> None:
    """Raise ValueError for a value the STT block rejects: each option alone, then the combinations.

    `values` holds the options under `prefix + name` (absent ones are the defaults); `owner` starts the
    messages ("SttConfig."). The one rule that also needs the channels (heads must divide the value
    channels) is `helpers.value_channels`, checked where the channels are known.
    """
    for option in STT_SPEC:
        if prefix + option.name in values:
            option.renamed(prefix).validate(values[prefix + option.name], owner)
    synth = values.get(prefix + "synth", "dense")
    if values.get(prefix + "fixed", False) and synth not in ("random", "mixture"):
        raise ValueError(f"{owner}{prefix}fixed=True applies to {prefix}synth='random' or 'mixture', "
                         f"got {prefix}synth={synth!r}")


def resolve(spec: Iterable[Option], given: dict[str, Any]) -> dict[str, Any]:
    """The value of every option in `spec`: popped from `given` (which keeps the rest), else the default."""
    return {option.name: given.pop(option.name, option.default) for option in spec}


__all__ = ["BOOL", "MODES", "POSITIVE_INT", "PROBABILITY", "STT_OPTION_NAMES", "STT_SPEC", "SYNTHS", "Check",
           "Option", "check_stt_options", "is_int", "one_of", "resolve", "sequence_of"]
