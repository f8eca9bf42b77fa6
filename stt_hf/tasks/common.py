"""What the train and evaluation apps share: argument parsing with `--config`, the classification data
arguments, timm's image transforms, the batch collator, and whether bf16 is native here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainerCallback

from ..data.common import open_image, to_channels


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


class ShortUsageErrors:
    """argparse mix-in: an error prints one line and the -h hint instead of the whole usage, which for
    train's 100+ TrainingArguments flags buries the message."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n  fix: see `{self.prog} -h` for the options\n")


class CommandParser(ShortUsageErrors, HfArgumentParser):
    """The trainers' HfArgumentParser, with one-line errors."""


@dataclass
class OutputArguments:
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Replace the results of an earlier run in --output_dir (its model, config and checkpoints). "
                "Without it a folder holding results is refused, unless --resume_from_checkpoint continues "
                "that run."})


def add_source_arguments(parser: argparse.ArgumentParser, *, model_help: str, dataset: str, trainer: str,
                         split: str | None = None) -> None:
    """The flags every evaluation subcommand opens with: `--model`, `--dataset` (`trainer`'s default),
    `--split` and `--image_column`."""
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--dataset", default=dataset, help=f"as for stt-hf {trainer}")
    parser.add_argument("--split", default=split,
                        help="split to score (default: test, else validation)" if split is None else None)
    parser.add_argument("--image_column", default="image")


def parse_with_config(dataclass_types: tuple, defaults: dict, argv: list[str] | None = None,
                      prog: str | None = None, run_name=None) -> list:
    """HfArgumentParser dataclasses from flags over `--config FILE` over `defaults`.

    The TrainingArguments (the last dataclass) also carry `overwrite_output_dir` (`OutputArguments`); with
    no `--output_dir`, theirs is `outputs/<run_name(*the other dataclasses)>`. A config key that names no
    flag is an error, as an unknown flag is.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or Path(sys.argv[0]).name
    parser = CommandParser((*dataclass_types, OutputArguments), prog=prog)
    parser.add_argument("--config", default=None, help="YAML/JSON file of defaults; flags override it.")
    # Without a GPU, say so: it is what makes accelerate run torchrun/accelerate-launched CPU
    # processes as one DDP job (gloo) instead of as independent runs.
    defaults = dict(defaults, use_cpu=not torch.cuda.is_available())
    config_path = config_file_flag(argv, error=parser.error)
    if config_path is not None:
        values = load_config_file(config_path)
        known = {f.name for dc in (*dataclass_types, OutputArguments) for f in dataclasses.fields(dc)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"--config {config_path}: unknown keys {unknown}; the keys are flag names "
                             f"without the dashes (see `{prog} -h`)")
        defaults.update(values)
    parser.set_defaults(**defaults)
    *parsed, output_args = parser.parse_args_into_dataclasses(argv)[: len(dataclass_types) + 1]
    parsed[-1].overwrite_output_dir = output_args.overwrite_output_dir
    if run_name is not None and parsed[-1].output_dir in (None, "trainer_output"):
        parsed[-1].output_dir = str(Path("outputs") / run_name(*parsed[:-1]))
    return parsed


def config_file_flag(argv: list[str], error=None) -> str | None:
    """The FILE of `--config FILE` or `--config=FILE` in argv, or None."""
    config_flag = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    if error is not None:
        config_flag.error = error
    config_flag.add_argument("--config", default=None)
    return config_flag.parse_known_args(argv)[0].config


def given_flags(argv: list[str] | None = None) -> set[str]:
    """Names of the arguments set by a flag or by `--config FILE` (not left at a default)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    names = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
    config_path = config_file_flag(argv)
    if config_path is not None:
        names |= set(load_config_file(config_path))
    return names


def load_config_file(path: str) -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        values = yaml.safe_load(text)
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {path}: not valid JSON ({e}); YAML files end in .yaml or .yml") \
                from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of argument names to values")
    return values


def json_object(text: str | None, flag: str) -> dict:
    """The dict a JSON flag (`--model_kwargs`, `--encoder_kwargs`) holds; {} for none."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} {text!r} is not valid JSON ({e}); expected an object such as "
                         '\'{"attn_layer": "none"}\'') from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} {text!r} is a JSON {type(value).__name__}; expected an object of option "
                         'names to values, such as \'{"attn_layer": "none"}\'')
    return value


def check_positive(**values) -> None:
    """Raise naming the first flag (by keyword) whose value is set and below 1."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}")


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

    def convert_then(transform):  # images come decoded, or undecoded (`data.common.undecoded`) to be named
        return lambda image: transform(to_channels(open_image(image), input_size[0]))

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

# TrainingArguments every trainer's recipe starts from (each adds its own schedule and batch sizes).
TRAINER_DEFAULTS = dict(
    learning_rate=2e-3, weight_decay=0.05, lr_scheduler_type="cosine", seed=42,
    # validation each epoch; the best checkpoint's weights are the run's
    eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
    report_to="none", dataloader_num_workers=0, dataloader_pin_memory=False,
)


def resume_checkpoint(training_args):
    """`--resume_from_checkpoint`: `latest` (or `last`, `true`) means the newest complete checkpoint in the
    output folder, which must exist; anything else is passed through.

    Complete means its trainer_state.json was written, which the Trainer does after the weights,
    optimizer and RNG states: a run killed while saving leaves a checkpoint folder without it."""
    resume = training_args.resume_from_checkpoint
    if resume in ("latest", "last", "true", "True"):
        folder = Path(training_args.output_dir)
        steps = {int(p.name.split("-")[1]): p for p in folder.glob("checkpoint-*")
                 if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").is_file()}
        if not steps:
            raise ValueError(f"--resume_from_checkpoint {resume}: {folder} holds no complete checkpoint-* "
                             "folder to resume from; leave the flag out to start a new run")
        return str(steps[max(steps)])
    if resume and not Path(resume).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
    return resume


def check_run(training_args) -> None:
    """Checks of the schedule and the output folder that need no data: run before any work."""
    args = training_args
    if args.max_steps < -1 or args.max_steps == 0:
        raise ValueError(f"--max_steps must be a positive number of steps (or -1: use --num_train_epochs), "
                         f"got {args.max_steps}")
    if args.max_steps == -1 and not args.num_train_epochs > 0:
        raise ValueError(f"--num_train_epochs must be positive when --max_steps is not set, got "
                         f"{args.num_train_epochs}")
    check_positive(per_device_train_batch_size=args.per_device_train_batch_size,
                   per_device_eval_batch_size=args.per_device_eval_batch_size,
                   gradient_accumulation_steps=args.gradient_accumulation_steps)
    resume_checkpoint(args)
    from ..reporting.run_folder import check_earlier_results

    check_earlier_results(args.output_dir, overwrite=args.overwrite_output_dir,
                          resuming=bool(args.resume_from_checkpoint))


class TrainingRun:
    """One trainer run around its Trainer, from claiming the output folder to publishing it.

    Made right before the model is built: it claims the output folder (an exclusive lock, held until
    `finish` or the end of the process; only the main process of a DDP job takes it), seeds every random
    number generator, so `--seed` decides the initial weights too, and takes `--push_to_hub` away from the
    Trainer: the finished folder (weights, code, card) is published, not the Trainer's checkpoints.
    """

    def __init__(self, subcommand: str, argv: list[str] | None, training_args):
        from transformers import set_seed

        from ..reporting.run_folder import OutputDirLock, claim_output_dir

        self.command = shlex.join(["stt-hf", subcommand, *(argv if argv is not None else sys.argv[1:])])
        if int(os.environ.get("RANK", "0")) == 0:
            self.lock = claim_output_dir(training_args.output_dir, command=self.command,
                                         overwrite=training_args.overwrite_output_dir,
                                         resuming=bool(training_args.resume_from_checkpoint))
        else:
            self.lock = OutputDirLock(Path(training_args.output_dir), None)
        set_seed(training_args.seed)
        self.push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False

    @staticmethod
    def train(trainer, resume: str | None):
        """trainer.train; a full disk at a checkpoint is an OSError naming the output folder."""
        from ..reporting.publish import write_failures_as_oserror

        with write_failures_as_oserror(trainer.args.output_dir):
            return trainer.train(resume_from_checkpoint=resume)

    @staticmethod
    def results(trainer, train_result, eval_metrics: dict, eval_split: str, started: float, **extra) -> dict:
        """The run's summary: training and held-out metrics, steps, where the weights come from, time."""
        return dict(train=train_result.metrics, eval=eval_metrics, eval_split=eval_split,
                    global_step=trainer.state.global_step, best=best_checkpoint(trainer),
                    wall_time_s=round(time.time() - started, 1), **extra)

    def finish(self, trainer, results: dict, write_outputs, print_summary, commit_message: str) -> None:
        """On the main process: `results["paths"] = write_outputs()`, the summary printed, the folder pushed
        if asked; then the output folder released."""
        if trainer.is_world_process_zero():
            results["paths"] = write_outputs()
            print_summary(results)
            if self.push_to_hub:
                push_run_folder(trainer, commit_message=commit_message)
        self.lock.release()


class UserFileMode(TrainerCallback):
    """Checkpoint files get the user's usual file mode (safetensors writes 0600 through a temporary
    file), like every other output."""

    def on_save(self, args, state, control, **kwargs):
        from ..hf.checkpoints import default_file_mode

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        mode = default_file_mode()
        for path in folder.rglob("*") if folder.is_dir() else ():
            if path.is_file():
                path.chmod(mode)


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


__all__ = ["TRAINER_DEFAULTS", "CommandParser", "DataArguments", "OutputArguments", "ShortUsageErrors",
           "TrainingRun", "UserFileMode", "add_source_arguments",
           "best_checkpoint", "build_transforms", "check_positive", "check_run", "collate", "given_flags",
           "image_transforms", "is_checkpoint", "json_object", "load_config_file", "native_bf16",
           "parse_with_config", "print_run_summary", "push_run_folder", "resume_checkpoint"]
