"""The stages of a built CNN and the positions each offers to `add_attention` (stt_hf.models.plugin).

A model's stages are the entries of timm's `feature_info`, or the `encoder.stages` of transformers' ResNet,
ConvNext and RegNet. `after` appends to the block list that ends the stage; `block` fills the empty
attention slots (`se`, `attn`) of its blocks. Finding them runs and modifies nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from timm.models import FeatureInfo
from timm.models.regnet import RegStage
from torch import nn

SLOT_NAMES = ("se", "attn")  # the attribute that holds a block's attention module, by family


class PlacementError(ValueError):
    """A place, an option or a model that `add_attention` cannot serve; nothing was modified."""


@dataclass
class Stage:
    """One stage of a model: its index, module name and what each position can use there."""

    index: int
    name: str
    module: nn.Module
    container: nn.Module | None  # where `after` appends (None: not possible here)
    slots: list[tuple[str, str]] = field(default_factory=list)  # (block name, attribute) of empty slots
    taken: list[str] = field(default_factory=list)  # "block.attr holds Class" of occupied slots

    def positions(self) -> list[str]:
        return [p for p, ok in (("after", self.container is not None), ("block", bool(self.slots))) if ok]

    def describe(self) -> str:
        return f"{self.index} ({self.name}: {', '.join(self.positions()) or 'no position'})"


def _stage_names(model: nn.Module) -> list[str]:
    """Module names of the stages: timm's feature_info, or transformers' `encoder.stages`."""
    info = getattr(model, "feature_info", None)
    if isinstance(info, FeatureInfo):  # features_only wrappers
        return list(info.module_name())
    if isinstance(info, (list, tuple)) and info and all(isinstance(i, dict) and "module" in i for i in info):
        return [i["module"] for i in info]
    for name, module in model.named_modules():
        if (name == "encoder.stages" or name.endswith(".encoder.stages")) and isinstance(
            module, nn.ModuleList
        ):
            return [f"{name}.{i}" for i in range(len(module))]
    raise PlacementError(
        f"No stages found in {type(model).__name__}: add_attention needs timm's "
        f"`feature_info` (any timm CNN) or transformers' `encoder.stages` (ResNet, ConvNext, "
        f"RegNet)"
    )


def _get(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:  # features_only wrappers flatten `stages.0` into `stages_0`
        return model.get_submodule(name.replace(".", "_", 1))


def has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _after_container(module: nn.Module) -> nn.Module | None:
    """The block list whose end is the stage's output, or None where nothing can be appended."""
    if isinstance(module, (nn.Sequential, RegStage)):  # RegStage runs its children in order
        return module
    children = list(module.named_children())
    if (
        children
        and children[-1][0] in ("blocks", "layers")
        and isinstance(children[-1][1], (nn.Sequential, nn.ModuleList))
    ):
        return children[-1][1]  # timm ConvNeXtStage.blocks, transformers' Stage.layers: run last
    if not has_state(module):  # an activation or Identity: wrapped with the module after it
        return module
    return None


def _slots(module: nn.Module) -> tuple[list[tuple[str, str]], list[str]]:
    """Empty attention slots under `module` (an attribute in SLOT_NAMES that is None or Identity), and
    the occupied ones, as text."""
    empty, taken = [], []
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Sequential, nn.ModuleList)):
            continue
        for attr in SLOT_NAMES:
            if attr in sub._modules or attr in vars(sub):
                value = getattr(sub, attr)
                if value is None or type(value) is nn.Identity:
                    empty.append((name, attr))
                elif isinstance(value, nn.Module):
                    taken.append(f"{name}.{attr} holds {type(value).__name__}")
    return empty, taken


def find_stages(model: nn.Module) -> list[Stage]:
    """The stages of `model` and the positions each one offers (nothing is run or modified)."""
    stages = []
    for index, name in enumerate(_stage_names(model)):
        module = _get(model, name)
        empty, taken = _slots(module)
        stages.append(Stage(index, name, module, _after_container(module), empty, taken))
    return stages
