"""What the train and evaluation apps share: argument parsing with `--config`, the classification data
arguments, timm's image transforms, the batch collator, and whether bf16 is native here."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from ..data.common import to_channels


@dataclass
class DataArguments:
    dataset: str = field(default="fashion_mnist", metadata={
        "help": "Built-in offline dataset (fashion_mnist, mnist_5k), a local imagefolder directory, "
                "or a Hub dataset id."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(default="label", metadata={"help": "Column holding the integer labels."})
    val_fraction: float = field(default=0.1, metadata={
        "help": "Fraction of train held out (seeded) when the dataset has no validation split."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the eval splits."})
    train_crop_scale: float = field(default=0.7, metadata={
        "help": "Smallest area fraction of the random-resized-crop training augmentation."})
    hflip: float = field(default=0.5, metadata={"help": "Horizontal flip probability in training."})
    in_memory: bool = field(default=True, metadata={
        "help": "Decode a training split that fits in 1 GiB and is at the input size once, and augment "
                "whole batches (same crop/flip as timm's transform, much cheaper); False: timm's "
                "per-image transforms."})
    streaming: bool = field(default=False, metadata={
        "help": "Read the train split as a stream (a Hub dataset id or a folder of Parquet/WebDataset "
                "shards, see stt-hf write-shards); needs --max_steps. Evaluation splits are materialised."})
    shuffle_buffer: int = field(default=1000, metadata={
        "help": "--streaming: examples held in the shuffle buffer (shards are shuffled too); 1: no shuffle."})


def parse_with_config(dataclass_types: tuple, defaults: dict, argv: list[str] | None = None) -> list:
    """HfArgumentParser dataclasses from flags over `--config FILE` over `defaults`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types)
    parser.add_argument("--config", default=None, help="YAML/JSON file of defaults; flags override it.")
    # Without a GPU, say so: it is what makes accelerate run torchrun/accelerate-launched CPU
    # processes as one DDP job (gloo) instead of as independent runs.
    defaults = dict(defaults, use_cpu=not torch.cuda.is_available())
    if "--config" in argv:
        defaults.update(load_config_file(argv[argv.index("--config") + 1]))
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses(argv)[: len(dataclass_types)]


def given_flags(argv: list[str] | None = None) -> set[str]:
    """Names of the arguments set by a flag or by `--config FILE` (not left at a default)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    names = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
    if "--config" in argv:
        names |= set(load_config_file(argv[argv.index("--config") + 1]))
    return names


def load_config_file(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        values = yaml.safe_load(text)
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of argument names to values")
    return values


def is_checkpoint(model: str) -> bool:
    """A folder or a Hub id (ORG/NAME), as opposed to a registered timm model name."""
    return Path(model).is_dir() or "/" in model


def native_bf16() -> bool:
    """Whether this machine computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU with
    AMX or AVX512-BF16 (there bf16 autocast trains the main job and the captioner about twice as fast as
    float32; elsewhere it is emulated and slower, so it stays off)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    if amx():
        return True
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in cpuinfo


def image_transforms(config, *, crop_scale: float, hflip: float, ratio: tuple[float, float] | None = None):
    """(train, eval) transforms of one PIL image for a config with `input_size()` and `data_config`:
    the image converted to the model's channels (`stt_hf.data.common.to_channels`), then timm's train
    (random-resized crop of at least `crop_scale` of the area, aspect `ratio`, flip) or eval transform."""
    from timm.data import create_transform

    input_size = config.input_size()
    data_cfg = dict(input_size=input_size, **config.data_config)
    train_tf = create_transform(**data_cfg, is_training=True, scale=(crop_scale, 1.0), ratio=ratio,
                                hflip=hflip, color_jitter=None)
    eval_tf = create_transform(**data_cfg, is_training=False)

    def convert_then(transform):
        return lambda image: transform(to_channels(image, input_size[0]))

    return convert_then(train_tf), convert_then(eval_tf)


def build_transforms(model, data_args: DataArguments):
    """timm's train/eval transforms for the classifier's data config, applied lazily per batch."""
    train_tf, eval_tf = image_transforms(model.config, crop_scale=data_args.train_crop_scale,
                                         hflip=data_args.hflip)

    def to_batch(transform):
        def apply(batch):
            return {"pixel_values": [transform(img) for img in batch["image"]], "labels": batch["label"]}
        return apply

    return to_batch(train_tf), to_batch(eval_tf)


def collate(examples: list[dict]) -> dict:
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e["labels"] for e in examples])}


# What the three trainers (`train`, `train-caption`, `train-seg`) do the same way around the Trainer.

def resume_checkpoint(training_args):
    """`--resume_from_checkpoint`: `latest` (or `last`, `true`) means the newest checkpoint in the output
    folder; anything else is passed through."""
    from transformers.trainer_utils import get_last_checkpoint

    resume = training_args.resume_from_checkpoint
    if resume in ("latest", "last", "true", "True"):
        return get_last_checkpoint(training_args.output_dir)
    return resume


def best_checkpoint(trainer) -> dict | None:
    """The checkpoint the final weights come from: step and validation score (None: the last step's)."""
    state, args = trainer.state, trainer.args
    if not args.load_best_model_at_end or state.best_model_checkpoint is None:
        return None
    return {"step": state.best_global_step, "checkpoint": Path(state.best_model_checkpoint).name,
            "metric": f"validation {args.metric_for_best_model}", "value": state.best_metric}


def print_run_summary(results: dict, scores: dict[str, float], split: str) -> None:
    """The end-of-run summary: time, the held-out scores, where the weights come from, what was written."""
    print(f"\n== done in {results['wall_time_s']:.0f} s; {split} split: "
          + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    best = results.get("best")
    if best:
        print(f"   weights from step {best['step']} of {results['global_step']} ({best['checkpoint']}), "
              f"{best['metric']} {best['value']:.4f}")
    else:
        print(f"   weights from the last step ({results['global_step']})")
    for example in results.get("examples", [])[:5]:
        print(f"   {example['reference']!r:50s} -> {example['generated']!r}")
    for name, path in results["paths"].items():
        print(f"   {name:16s} {path}")
    sys.stdout.flush()


def push_run_folder(trainer, commit_message: str) -> None:
    """Publish the finished output folder (weights, code, card), not the Trainer's checkpoints."""
    from ..reporting.publish import push_folder

    args = trainer.args
    push_folder(args.output_dir, args.hub_model_id or Path(args.output_dir).name, token=args.hub_token,
                commit_message=commit_message)


__all__ = ["DataArguments", "best_checkpoint", "build_transforms", "collate", "given_flags",
           "image_transforms", "is_checkpoint", "load_config_file", "native_bf16", "parse_with_config",
           "print_run_summary", "push_run_folder", "resume_checkpoint"]
