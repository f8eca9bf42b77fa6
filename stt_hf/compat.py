"""Old import paths of modules that moved into subpackages, kept working for one release.

`import stt_hf.configuration_stt` (the 0.1 layout) imports `stt_hf.hf.configuration_stt` under both names
and warns once; nothing is copied, so `stt_hf.configuration_stt.SttConfig is stt_hf.hf.SttConfig`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module name (under stt_hf) -> where it lives now
MOVED_MODULES = {
    "configuration_stt": "hf.configuration_stt",
    "modeling_stt": "hf.modeling_stt",
    "modeling_stt_seg": "hf.modeling_stt_seg",
    "captioning": "hf.captioning",
    "convert": "hf.convert",
    "caption_data": "data.captions",
    "scenes": "data.scenes",
    "seg_data": "data.segmentation",
    "batch_augment": "data.batch_augment",
    "train": "tasks.train",
    "train_caption": "tasks.train_caption",
    "train_seg": "tasks.train_seg",
    "evaluation": "tasks.evaluation",
    "evaluation_caption": "tasks.evaluation_caption",
    "evaluation_seg": "tasks.evaluation_seg",
    "export": "tasks.export",
    "demo": "tasks.demo",
    "publish": "reporting.publish",
    "model_card": "reporting.model_card",
    "visualize": "reporting.visualize",
    "profiling": "reporting.profiling",
    "ablation": "experiments.ablation",
    "benchmark": "experiments.benchmark",
    "caption_comparison": "experiments.caption_comparison",
    "main_comparison": "experiments.main_comparison",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `stt_hf.<old name>` to the module that now holds its code."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != "stt_hf" or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = f"stt_hf.{MOVED_MODULES[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; the old path goes away in the next release",
                      FutureWarning, stacklevel=2)
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # the import system sets __spec__ to the alias's; undone below
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # already executed under its new name


def install() -> None:
    """Put the finder on sys.meta_path once (idempotent)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
