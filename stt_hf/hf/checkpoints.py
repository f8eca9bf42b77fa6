"""Checkpoint files: safe reading, strict loading, and the key names of the two formats.

- `load_checkpoint` reads a state dict from a .safetensors file, a pickle file (only with
  `allow_pickle=True`, then with `torch.load(weights_only=True)`), or a folder holding one;
- `check_local_weights` is the pickle check `from_pretrained` runs on a local folder;
- `timm_to_hf_state_dict` / `hf_to_timm_state_dict` map the key names: timm's `fc.` is transformers'
  `classifier.`, everything else sits under `resnet.` (the mapping is declared beside the network, in
  `models/stt_resnet.py`, whose timm loader uses it too).

Every failure is a `CheckpointError` (a ValueError) naming the file and what to do. This module is
copied flat into saved checkpoints with the model code.
"""

from __future__ import annotations

import os
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from ..models.stt_resnet import hf_to_timm_state_dict as _hf_to_timm_keys
from ..models.stt_resnet import is_hf_state_dict, timm_to_hf_state_dict

SAFE_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
# Files that torch.load reads with pickle, by suffix, and the usual names of a folder's weights.
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pth.tar", ".ckpt")
PICKLE_NAMES = ("pytorch_model.bin", "open_clip_pytorch_model.bin", "model.pth", "model.pt")
# Keys under which training checkpoints wrap the weights.
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: unsafe format, corrupt file or another architecture."""


def is_pickle_file(name: str | os.PathLike) -> bool:
    return str(name).endswith(PICKLE_SUFFIXES)


def load_checkpoint(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in `path`: a .safetensors file, a pickle file, or a folder holding one.

    Pickle files (.bin, .pth, ...) can run code when loaded, so they need allow_pickle=True, and even
    then are read with torch.load(weights_only=True). A corrupt or truncated safetensors file raises
    CheckpointError naming it.
    """
    path = Path(path)
    if path.is_dir():
        path = weights_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}")
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own error type for bad headers and sizes
            raise CheckpointError(f"{path} is not a valid safetensors file: it is corrupt or truncated "
                                  f"({e}). Write or download it again.") from e
    if not allow_pickle:
        raise CheckpointError(f"{path} is a pickle file, which can run arbitrary code when loaded. "
                              f"Pass allow_pickle=True (--allow-pickle on the command line) if you trust "
                              f"it; it is then read with torch.load(weights_only=True).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"Could not read {path} with torch.load(weights_only=True): {e}") from e
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def weights_file(folder: str | os.PathLike) -> Path:
    """The weights file of a folder: model.safetensors, another .safetensors, then pickle files."""
    folder = Path(folder)
    if (folder / SAFE_NAME).is_file():
        return folder / SAFE_NAME
    found = sorted(folder.glob("*.safetensors"))
    found = found or [folder / n for n in PICKLE_NAMES if (folder / n).is_file()]
    found = found or sorted(p for p in folder.iterdir() if is_pickle_file(p.name))
    if not found:
        raise FileNotFoundError(f"No weights (.safetensors, .bin, .pth) in {folder}")
    return found[0]


def check_local_weights(folder: str | os.PathLike) -> None:
    """Raise CheckpointError when a local checkpoint folder has pickle weights and no safetensors."""
    names = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    if names & {SAFE_NAME, SAFE_INDEX_NAME}:
        return
    pickles = sorted(n for n in names if is_pickle_file(n))
    if pickles:
        raise CheckpointError(
            f"{str(folder)!r} has only pickle weights ({', '.join(pickles)}), which can run code when "
            f"loaded. Pass use_safetensors=False to load them anyway (read with "
            f"torch.load(weights_only=True)), or convert them to model.safetensors.")


def default_file_mode() -> int:
    """The mode a plain `open(path, "w")` gives a new file: 0o666 minus the process umask."""
    try:  # Linux reports the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True), with an error that names the first mismatched keys and shapes."""
    own = model.state_dict()
    problems = [f"{k} has shape {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
                for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    problems += [f"{k} {tuple(v.shape)} is missing from the checkpoint"
                 for k, v in own.items() if k not in state_dict]
    problems += [f"{k} is in the checkpoint but not in the model" for k in state_dict if k not in own]
    if problems:
        shown = "\n  ".join(problems[:5])
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise CheckpointError(f"The checkpoint {source} does not fit {type(model).__name__} "
                              f"({len(problems)} mismatched keys):\n  {shown}{more}")
    model.load_state_dict(state_dict)


def hf_to_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers-format keys to timm's (the mapping lives beside the network in models/)."""
    try:
        return _hf_to_timm_keys(state_dict)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


__all__ = ["PICKLE_NAMES", "PICKLE_SUFFIXES", "SAFE_NAME", "CheckpointError", "check_local_weights",
           "default_file_mode",
           "hf_to_timm_state_dict", "is_hf_state_dict", "is_pickle_file", "load_checkpoint",
           "load_state_dict_strict", "timm_to_hf_state_dict", "weights_file"]
