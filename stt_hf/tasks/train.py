"""`stt-hf train`: train or fine-tune an STT image classifier with the Hugging Face Trainer.

Every TrainingArguments flag works, plus the model and data arguments below; `--config FILE`
(YAML or JSON) supplies defaults that flags override. With no arguments it runs the project's main
job: the small-input STT ResNet on Fashion-MNIST, ending in `outputs/<run>/` with safetensors
weights, config, processor, model card, metrics JSON and a plot of the training curves.

Runs unchanged under `torchrun --nproc_per_node N` or `accelerate launch` (DDP): only the main
process writes the final model, card and plots.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from ..data.classification import load_image_dataset, validate_dataset
from ..data.common import undecoded
from ..metrics import compute_classification_metrics
from ..reporting.publish import write_run_outputs
from . import streaming
from .common import (
    TRAINER_DEFAULTS,
    DataArguments,
    TrainingRun,
    UserFileMode,
    build_transforms,
    check_positive,
    check_run,
    given_flags,
    is_checkpoint,
    json_object,
    native_bf16,
    parse_with_config,
    print_run_summary,
    resume_checkpoint,
)

# Defaults of the main job (used unless a flag or --config says otherwise).
MAIN_JOB_DEFAULTS = dict(
    TRAINER_DEFAULTS,
    # Chosen by the trial runs in docs/results.md ("The main job's recipe"): 3.5 epochs at batch 128
    # are what fits the 8-minute budget of the main job on 2 CPU cores with bf16.
    num_train_epochs=3.5, warmup_steps=100, logging_steps=20,
    per_device_train_batch_size=128, per_device_eval_batch_size=256,
    label_smoothing_factor=0.1, train_crop_scale=1.0,
    save_total_limit=2, metric_for_best_model="accuracy",
)


# Built-in datasets and their native image size.
NATIVE_IMG_SIZE = {"fashion_mnist": 28, "mnist_5k": 28}


@dataclass
class ModelArguments:
    model: str = field(default="stt_resnet10_s", metadata={
        "help": "A registered timm model name (e.g. stt_resnet18_s), or a checkpoint directory / Hub id "
                "to fine-tune."})
    img_size: int | None = field(default=None, metadata={
        "help": "Input size in pixels; default: the native size of a built-in dataset (28 for "
                "fashion_mnist and mnist_5k) when training from a timm name, else the model's own."})
    channels_last: bool = field(default=True, metadata={
        "help": "Train in channels_last memory format (faster convolutions on CPUs and recent GPUs)."})
    model_kwargs: str | None = field(default=None, metadata={
        "help": 'JSON of extra model options, e.g. \'{"stt_synth": "random", "attn_placement": "stage"}\'.'})


def run_name(model_args: ModelArguments, data_args: DataArguments) -> str:
    return f"{Path(model_args.model).name}-{Path(data_args.dataset).name}"


def parse_args(argv: list[str] | None = None):
    """Dataclasses from flags, with `--config FILE` and the main-job defaults underneath."""
    defaults = dict(MAIN_JOB_DEFAULTS, bf16=native_bf16())
    model_args, data_args, training_args = parse_with_config(
        (ModelArguments, DataArguments, TrainingArguments), defaults, argv, prog="stt-hf train",
        run_name=run_name)
    json_object(model_args.model_kwargs, "--model_kwargs")
    check_positive(img_size=model_args.img_size, max_train_samples=data_args.max_train_samples,
                   max_eval_samples=data_args.max_eval_samples)
    return model_args, data_args, training_args


def build_model(model_args: ModelArguments, labels: list[str]):
    """A fresh STT model from a timm name, or a checkpoint with its head resized to `labels`."""
    from ..hf.configuration_stt import SttConfig
    from ..hf.modeling_stt import SttForImageClassification
    from ..models.plugin import PLUGGED_MODELS

    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in id2label.items()}
    extra = json_object(model_args.model_kwargs, "--model_kwargs")
    if model_args.img_size:
        extra["img_size"] = model_args.img_size
    if is_checkpoint(model_args.model):
        return SttForImageClassification.from_pretrained(
            model_args.model, num_labels=len(labels), id2label=id2label, label2id=label2id,
            ignore_mismatched_sizes=True, **extra)
    if model_args.model in PLUGGED_MODELS:  # a plugged timm CNN (stt_convnext_*, stt_efficientnet_*)
        from ..hf.configuration_stt_plugin import SttPluginConfig
        from ..hf.modeling_stt_plugin import SttPluginForImageClassification

        config = SttPluginConfig.from_timm_name(model_args.model, num_labels=len(labels), id2label=id2label,
                                                label2id=label2id, **extra)
        return SttPluginForImageClassification(config)
    config = SttConfig.from_timm_name(model_args.model, num_labels=len(labels), id2label=id2label,
                                      label2id=label2id, **extra)
    return SttForImageClassification(config)


def training_data(model, dsd, data_args: DataArguments, channels_last: bool):
    """(train dataset, collator): in memory with batch augmentation when it fits, else timm's transforms."""
    from ..data.batch_augment import BatchAugment, decode_split

    data = model.config.data_config
    collator = BatchAugment(data["mean"], data["std"], scale=(data_args.train_crop_scale, 1.0),
                            hflip=data_args.hflip, channels_last=channels_last)
    train_ds = decode_split(dsd["train"], model.config.input_size()) if data_args.in_memory else None
    if train_ds is None:
        train_tf, _ = build_transforms(model, data_args)
        train_ds = undecoded(dsd["train"]).with_transform(train_tf)
    return train_ds, collator


def run(argv: list[str] | None = None) -> tuple[Trainer, dict]:
    """Train, evaluate on the held-out split and write the outputs; return (trainer, results)."""
    model_args, data_args, training_args = parse_args(argv)
    check_run(training_args)  # the schedule, the resume point and the output folder, before any work
    started = time.time()
    streaming.check_parallelism(training_args)
    if data_args.streaming:
        streaming.check_training_args(training_args)
        train_stream, dsd, labels = streaming.load_streaming_data(data_args, training_args)
    else:
        dsd = load_image_dataset(data_args.dataset, image_column=data_args.image_column,
                                 label_column=data_args.label_column, val_fraction=data_args.val_fraction,
                                 seed=training_args.seed, max_train_samples=data_args.max_train_samples,
                                 max_eval_samples=data_args.max_eval_samples)
        labels = dsd["train"].features["label"].names
    validate_dataset(dsd, num_labels=len(labels))  # fail before any training

    if model_args.img_size is None and not is_checkpoint(model_args.model):
        model_args.img_size = NATIVE_IMG_SIZE.get(data_args.dataset)  # train at 28 px, not upsampled
    training_run = TrainingRun("train", argv, training_args)  # the folder locked, every RNG seeded
    model = build_model(model_args, labels)
    if model_args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    _, eval_tf = build_transforms(model, data_args)
    val_ds = undecoded(dsd["validation"]).with_transform(eval_tf)
    training_args.remove_unused_columns = False  # with_transform datasets need their raw columns
    resume = resume_checkpoint(training_args)

    if data_args.streaming:
        streaming.pipeline_defaults(training_args, per_image=True, explicit=given_flags(argv))
        trainer = streaming.build_trainer(model, train_stream, val_ds, data_args, training_args, resume,
                                          channels_last=model_args.channels_last,
                                          compute_metrics=compute_classification_metrics)
    else:
        from ..data.batch_augment import InMemoryImages

        train_ds, collator = training_data(model, dsd, data_args, model_args.channels_last)
        streaming.pipeline_defaults(training_args, per_image=not isinstance(train_ds, InMemoryImages),
                                    explicit=given_flags(argv))
        trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=val_ds,
                          data_collator=collator, compute_metrics=compute_classification_metrics)
    trainer.add_callback(UserFileMode())
    train_result = training_run.train(trainer, resume)

    eval_split = "test" if "test" in dsd else "validation"
    eval_metrics = trainer.evaluate(undecoded(dsd[eval_split]).with_transform(eval_tf),
                                    metric_key_prefix=eval_split)
    results = training_run.results(trainer, train_result, eval_metrics, eval_split, started)
    if data_args.streaming:
        seen = trainer.state.global_step * training_args.gradient_accumulation_steps * \
            training_args.per_device_train_batch_size * training_args.world_size
        results["train_samples"] = f"{seen} streamed"
    training_run.finish(trainer, results, lambda: write_run_outputs(
        trainer, model_args=asdict(model_args), data_args=asdict(data_args), dsd=dsd, results=results,
        command=training_run.command), print_summary, commit_message="Upload STT model")
    return trainer, results


def print_summary(results: dict) -> None:
    split = results["eval_split"]
    print_run_summary(results, {k.removeprefix(f"{split}_"): v for k, v in results["eval"].items()
                                if k.endswith(("accuracy", "macro_f1"))}, split)


def main(argv: list[str] | None = None) -> dict:
    """Run `stt-hf train` with these command-line arguments; return the results summary."""
    return run(argv)[1]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
