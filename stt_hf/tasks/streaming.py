"""`stt-hf train --streaming`: the Trainer fed by a `TrainingStream` (`stt_hf.data.streaming`).

What changes against the in-memory path:
- `--max_steps` is required (a stream has no length, so epochs cannot set the number of steps), and
  evaluation/saving every epoch becomes every `max_steps // 10` steps (an endless stream has no epochs);
- each process reads its own shards (`split_dataset_by_node`) with its own DataLoader workers, so the
  train DataLoader is built here, not by accelerate (whose `prepare` would dispatch or re-shard it);
- the stream settings go into each checkpoint (`StreamSettings`); a resumed run checks them and skips
  the batches trained on, which makes the resume exact (the guarantee is in `stt_hf.data.streaming`);
- the validation and test splits are materialised for evaluation.

Two things every `stt-hf train` run gets from here too: `pipeline_defaults`, the DataLoader options
that follow from the input-pipeline benchmark (`default_num_workers` when per-image transforms run and
`--dataloader_num_workers` is not given), and `check_parallelism`, which refuses `--fsdp` without a GPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from ..data.streaming import (
    EVAL_SPLITS,
    StreamLoader,
    TrainingStream,
    class_names,
    decode_image,
    materialise_split,
    node_shard,
    open_stream,
    select_columns,
    workers_for,
)

logger = logging.getLogger(__name__)

# One DataLoader worker (one thread) decoding an ImageNet-sized JPEG and running timm's train transform
# at 224 px: 117.4 images/s, `stt-hf bench-input` (model_cards/results/input_pipeline/input_pipeline.json).
IMAGES_PER_S_PER_WORKER_224 = 117.4
# stt_resnet50 training images/s on one A100-class GPU with mixed precision: the published ResNet-50
# rate (2470 images/s) over the cost ratio bench-input measured on a CPU (1.171): an assumption,
# docs/training.md.
GPU_IMAGES_PER_S = 2110.0


class StreamSettings(TrainerCallback, ExportableState):
    """What must not change between a streaming run and its resumption; kept in trainer_state.json."""

    def __init__(self, **settings):
        self.settings = settings

    def state(self) -> dict:
        return {"args": self.settings, "attributes": {}}


class StreamingTrainer(Trainer):
    """A Trainer whose training DataLoader reads this process's `TrainingStream` with its own workers."""

    def __init__(self, *args, stream_workers: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream_workers = stream_workers

    def get_train_dataloader(self):
        args, workers = self.args, self.stream_workers
        return StreamLoader(self.train_dataset, batch_size=args.per_device_train_batch_size,
                            collate_fn=self.data_collator, num_workers=workers,
                            pin_memory=args.dataloader_pin_memory,
                            prefetch_factor=args.dataloader_prefetch_factor if workers else None)


def check_parallelism(training_args) -> None:
    """Refuse `--fsdp` without a GPU: accelerate enables FSDP only for GPU-like devices, and CPU
    processes would silently train as plain DDP instead."""
    if training_args.fsdp and not torch.cuda.is_available():
        raise ValueError("--fsdp: FSDP needs GPUs (accelerate runs CPU processes as DDP and would ignore "
                         "--fsdp); drop --fsdp to train data-parallel on CPUs")


def check_training_args(training_args) -> None:
    """`--max_steps` is required; epoch-wise evaluation and saving become step-wise."""
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps N: a stream has no length, so the number of "
                         "optimizer steps cannot come from --num_train_epochs")
    every = max(1, training_args.max_steps // 10)
    if training_args.eval_strategy == IntervalStrategy.EPOCH:
        training_args.eval_strategy, training_args.eval_steps = IntervalStrategy.STEPS, every
        logger.warning("--streaming: an endless stream has no epochs; evaluating every %d steps "
                       "(--eval_strategy steps --eval_steps N to choose)", every)
    if training_args.save_strategy == SaveStrategy.EPOCH:
        training_args.save_strategy, training_args.save_steps = SaveStrategy.STEPS, training_args.eval_steps \
            if training_args.eval_strategy == IntervalStrategy.STEPS else every
        logger.warning("--streaming: saving every %d steps (--save_strategy steps --save_steps N to "
                       "choose)", training_args.save_steps)


def load_streaming_data(data_args, training_args):
    """(train stream of this process, raw; {"validation", "test"} materialised; class names)."""
    import datasets

    if data_args.shuffle_buffer < 1:
        raise ValueError(f"--shuffle_buffer must be a positive number of examples (1: no shuffling), got "
                         f"{data_args.shuffle_buffer}")

    source = select_columns(open_stream(data_args.dataset, "train"), data_args.image_column,
                            data_args.label_column, "label")
    eval_splits = {}
    for split in EVAL_SPLITS:
        try:
            stream = open_stream(data_args.dataset, split)
        except ValueError:
            continue
        stream = select_columns(stream, data_args.image_column, data_args.label_column, "label")
        stream = stream.cast_column("image", datasets.Image())
        eval_splits[split] = materialise_split(stream, data_args.max_eval_samples)
    if not eval_splits:
        raise ValueError(f"--dataset {data_args.dataset}: --streaming evaluates on a 'validation' or "
                         "'test' split, and the source has neither")
    eval_splits.setdefault("validation", eval_splits.get("test"))
    labels = class_names(source, eval_splits["validation"])
    rank_source = node_shard(source, training_args.process_index, training_args.world_size)
    return rank_source, datasets.DatasetDict(eval_splits), labels


def stream_settings(data_args, training_args, workers: int) -> dict:
    return dict(dataset=str(data_args.dataset), world_size=training_args.world_size,
                per_device_train_batch_size=training_args.per_device_train_batch_size,
                gradient_accumulation_steps=training_args.gradient_accumulation_steps,
                dataloader_num_workers=workers, seed=training_args.seed,
                shuffle_buffer=data_args.shuffle_buffer)


def batches_trained(checkpoint: str | None, settings: dict) -> int:
    """Batches this process trained on before `checkpoint` (0 without one); raises a ValueError when
    the checkpoint's stream settings differ from `settings` (the stream position would be wrong)."""
    if checkpoint is None:
        return 0
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    saved = state.get("stateful_callbacks", {}).get(StreamSettings.__name__, {}).get("args")
    if saved is None:
        raise ValueError(f"{checkpoint} was not written by a --streaming run: it records no stream position")
    changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if changed:
        shown = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ValueError(f"cannot resume the stream of {checkpoint} exactly: {shown}. Resume with the "
                         "checkpoint's settings")
    return state["global_step"] * settings["gradient_accumulation_steps"]


def example_transform(train_tf):
    """Raw stream example -> {"pixel_values", "labels"}, run in the DataLoader workers."""
    def apply(example):
        return {"pixel_values": train_tf(decode_image(example["image"])), "labels": int(example["label"])}
    return apply


def build_trainer(model, rank_source, eval_ds, data_args, training_args, resume, *, channels_last: bool,
                  **trainer_kwargs) -> StreamingTrainer:
    """The StreamingTrainer over this process's stream, positioned after `resume`'s batches: timm's
    per-image train transform in the workers, batches stacked by `BatchAugment` (which only stacks
    images that are already tensors)."""
    from ..data.batch_augment import BatchAugment
    from .common import image_transforms

    workers = workers_for(rank_source, training_args.dataloader_num_workers)
    settings = stream_settings(data_args, training_args, workers)
    train_tf, _ = image_transforms(model.config, crop_scale=data_args.train_crop_scale, hflip=data_args.hflip)
    stream = TrainingStream(rank_source, example_transform(train_tf),
                            batch_size=training_args.per_device_train_batch_size, seed=training_args.seed,
                            shuffle_buffer=data_args.shuffle_buffer,
                            skip_batches=batches_trained(resume, settings))
    data = model.config.data_config
    collator = BatchAugment(data["mean"], data["std"], channels_last=channels_last)
    return StreamingTrainer(model=model, args=training_args, train_dataset=stream, eval_dataset=eval_ds,
                            data_collator=collator, callbacks=[StreamSettings(**settings)],
                            stream_workers=workers, **trainer_kwargs)


def default_num_workers(model_images_per_s: float, *,
                        per_worker_images_per_s: float = IMAGES_PER_S_PER_WORKER_224,
                        cpus: int | None = None, processes: int = 1) -> int:
    """DataLoader workers per process that decode as fast as the model trains: the images/s one
    training process consumes over what one worker produces, rounded up, and at most the cores this
    process has left (one stays with the training loop)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    spare = max(0, cpus // max(1, processes) - 1)
    return min(spare, math.ceil(model_images_per_s / per_worker_images_per_s))


def pipeline_defaults(training_args, *, per_image: bool, explicit: set[str]) -> None:
    """Set the DataLoader options the user did not give: workers when per-image transforms run,
    pinned memory only for a GPU, persistent workers whenever there are workers."""
    cuda = torch.cuda.is_available()
    if "dataloader_num_workers" not in explicit and per_image:
        # A GPU: enough workers to decode what stt_resnet50 trains per second there (an assumption,
        # docs/training.md). A CPU trains far slower than one worker decodes (measured), so one worker
        # is enough to take decoding off the training loop.
        rate = GPU_IMAGES_PER_S if cuda else 1.0
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        training_args.dataloader_num_workers = default_num_workers(rate, processes=processes)
    if "dataloader_pin_memory" not in explicit:
        training_args.dataloader_pin_memory = cuda
    if "dataloader_persistent_workers" not in explicit:
        training_args.dataloader_persistent_workers = training_args.dataloader_num_workers > 0


__all__ = ["GPU_IMAGES_PER_S", "IMAGES_PER_S_PER_WORKER_224", "StreamSettings", "StreamingTrainer",
           "batches_trained", "build_trainer", "check_parallelism", "check_training_args",
           "default_num_workers", "example_transform", "load_streaming_data", "pipeline_defaults",
           "stream_settings"]
