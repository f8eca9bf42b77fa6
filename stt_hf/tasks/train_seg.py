"""`stt-hf train-seg`: train a semantic segmenter (transformers' UperNet over an STT backbone) with the
Hugging Face Trainer.

Every TrainingArguments flag works, plus the model and data arguments below; `--config FILE` (YAML or
JSON) supplies defaults that flags override; `--resume_from_checkpoint latest` continues an interrupted
run; `--push_to_hub` publishes the finished folder. With no arguments it trains on `fashion_scenes`
(64 px, 4,000 training scenes) and ends in `outputs/<run>/` with safetensors weights, config and model
code, image processor, model card, metrics JSON, training curves and a prediction overlay PNG.

Masks are checked before any training (size, mode, labels in range); see `stt_hf.data.segmentation`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import Trainer, TrainingArguments

from ..data.segmentation import (
    SegmentationCollator,
    SegmentationDataset,
    class_names,
    decode_segmentation,
    load_segmentation_dataset,
    parse_class_names,
)
from ..hf.modeling_stt_seg import (
    IGNORE_INDEX,
    SttUperNetForSemanticSegmentation,
    build_segmenter,
)
from ..metrics import compute_segmentation_metrics
from ..reporting.publish import write_seg_outputs
from .common import (
    TRAINER_DEFAULTS,
    TrainingRun,
    UserFileMode,
    check_positive,
    check_run,
    is_checkpoint,
    json_object,
    parse_with_config,
    print_run_summary,
    resume_checkpoint,
)

SEG_DEFAULTS = dict(
    TRAINER_DEFAULTS,
    num_train_epochs=3, warmup_steps=30, logging_steps=10,
    per_device_train_batch_size=32, per_device_eval_batch_size=64,
    save_total_limit=2, metric_for_best_model="mean_iou",
)


@dataclass
class SegModelArguments:
    model: str = field(default="stt_resnet10_s", metadata={
        "help": "Registered timm STT model whose trunk is the UperNet backbone (e.g. stt_resnet18), or a "
                "saved segmenter (folder or Hub id) to fine-tune."})
    img_size: int | None = field(default=None, metadata={
        "help": "Input size in pixels (square); default: the fashion_scenes canvas, else 64. Images are "
                "resized to it (masks with nearest neighbour)."})
    model_kwargs: str | None = field(default='{"small_input": false}', metadata={
        "help": 'JSON of backbone options (SttConfig fields). Default: the ImageNet stem (stride 4), which '
                'at 64 px costs a tenth of small_input; e.g. \'{"attn_layer": "none"}\' for a plain ResNet.'})
    hidden_size: int = field(default=64, metadata={"help": "Width of the UperNet head."})
    auxiliary_head: bool = field(default=True, metadata={
        "help": "Train with UperNet's auxiliary FCN head on stage 3 (loss weight 0.4)."})


@dataclass
class SegDataArguments:
    dataset: str = field(default="fashion_scenes", metadata={
        "help": "fashion_scenes (built in, offline), a folder of images/ + masks/ pairs (or a save_to_disk "
                "folder), or a Hub dataset id with image and mask columns."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    mask_column: str = field(default="mask", metadata={"help": "Column holding the label masks."})
    class_names: str | None = field(default=None, metadata={
        "help": "Comma-separated class names (mask value i = name i), or a file of one per line; default: "
                "the dataset's (fashion_scenes, classes.txt), else class_0.. up to the largest label."})
    scenes_canvas: int = field(default=64, metadata={"help": "fashion_scenes: canvas side in pixels."})
    scenes_train: int = field(default=4000, metadata={"help": "fashion_scenes: training scenes."})
    scenes_validation: int = field(default=500, metadata={"help": "fashion_scenes: validation scenes."})
    scenes_test: int = field(default=500, metadata={"help": "fashion_scenes: test scenes."})
    val_fraction: float = field(default=0.1, metadata={
        "help": "Fraction of train held out (seeded) when the dataset has no validation split."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the eval splits."})
    hflip: float = field(default=0.5, metadata={"help": "Horizontal flip probability in training."})


def run_name(model_args: SegModelArguments, data_args: SegDataArguments) -> str:
    return f"segmenter-{Path(model_args.model).name}-{Path(data_args.dataset).name}"


def parse_args(argv: list[str] | None = None):
    model_args, data_args, training_args = parse_with_config(
        (SegModelArguments, SegDataArguments, TrainingArguments), SEG_DEFAULTS, argv, prog="stt-hf train-seg",
        run_name=run_name)
    json_object(model_args.model_kwargs, "--model_kwargs")
    check_positive(img_size=model_args.img_size, hidden_size=model_args.hidden_size,
                   scenes_canvas=data_args.scenes_canvas, scenes_train=data_args.scenes_train,
                   scenes_validation=data_args.scenes_validation, scenes_test=data_args.scenes_test,
                   max_train_samples=data_args.max_train_samples, max_eval_samples=data_args.max_eval_samples)
    return model_args, data_args, training_args


def build_model(model_args: SegModelArguments, labels: list[str]) -> SttUperNetForSemanticSegmentation:
    """A fresh segmenter from a timm name, or a saved one with its classifiers resized to `labels`."""
    if is_checkpoint(model_args.model):
        id2label = dict(enumerate(labels))
        return SttUperNetForSemanticSegmentation.from_pretrained(
            model_args.model, num_labels=len(labels), id2label=id2label,
            label2id={n: i for i, n in id2label.items()}, ignore_mismatched_sizes=True)
    extra = json_object(model_args.model_kwargs, "--model_kwargs")
    return build_segmenter(model_args.model, labels=labels, hidden_size=model_args.hidden_size,
                           use_auxiliary_head=model_args.auxiliary_head, img_size=model_args.img_size,
                           **extra)


def argmax_logits(logits, labels):
    """preprocess_logits_for_metrics: keep the predicted label maps (N, H, W), not the logits."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits.argmax(dim=1)


def segmentation_metrics(labels: list[str]):
    """compute_metrics for the Trainer: mean IoU, pixel accuracy and per-class IoU."""

    def compute(eval_pred) -> dict[str, float]:
        return compute_segmentation_metrics(eval_pred.predictions, eval_pred.label_ids, len(labels),
                                            IGNORE_INDEX, labels)

    return compute


def image_size(model_args: SegModelArguments, data_args: SegDataArguments) -> int:
    if model_args.img_size:
        return model_args.img_size
    return data_args.scenes_canvas if data_args.dataset == "fashion_scenes" else 64


def run(argv: list[str] | None = None) -> tuple[Trainer, dict]:
    """Check the masks, train, score the test split and write the outputs; return (trainer, results)."""
    model_args, data_args, training_args = parse_args(argv)
    check_run(training_args)  # the schedule, the resume point and the output folder, before any work
    started = time.time()
    dsd, names = load_segmentation_dataset(
        data_args.dataset, image_column=data_args.image_column, mask_column=data_args.mask_column,
        val_fraction=data_args.val_fraction, seed=training_args.seed, scene_canvas=data_args.scenes_canvas,
        scene_sizes={"train": data_args.scenes_train, "validation": data_args.scenes_validation,
                     "test": data_args.scenes_test},
        max_train_samples=data_args.max_train_samples, max_eval_samples=data_args.max_eval_samples)
    names = parse_class_names(data_args.class_names) or names
    if model_args.img_size is None and is_checkpoint(model_args.model):
        size = None  # the checkpoint's own input size, read below
    else:
        model_args.img_size = size = image_size(model_args, data_args)
    if size is None:
        from transformers import AutoConfig

        size = AutoConfig.from_pretrained(model_args.model).backbone_config.img_size
        size = size if isinstance(size, int) else size[0]
    arrays, num_labels = decode_segmentation(dsd, size, len(names) if names else None)  # before training
    labels = class_names(names, num_labels)
    training_run = TrainingRun("train-seg", argv, training_args)  # the folder locked, every RNG seeded
    model = build_model(model_args, labels)
    data = model.config.backbone_config.data_config
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    if len(arrays["train"]) % training_args.per_device_train_batch_size == 1:
        # A last batch of one image cannot train: the pooling branch of UperNet's PPM normalizes a 1x1 map.
        training_args.dataloader_drop_last = True

    trainer = Trainer(model=model, args=training_args,
                      train_dataset=SegmentationDataset(arrays["train"], hflip=data_args.hflip),
                      eval_dataset=SegmentationDataset(arrays["validation"]),
                      data_collator=SegmentationCollator(data["mean"], data["std"]),
                      compute_metrics=segmentation_metrics(labels),
                      preprocess_logits_for_metrics=argmax_logits, callbacks=[UserFileMode()])
    train_result = training_run.train(trainer, resume_checkpoint(training_args))

    eval_split = "test" if "test" in arrays else "validation"
    eval_metrics = trainer.evaluate(SegmentationDataset(arrays[eval_split]), metric_key_prefix=eval_split)
    results = training_run.results(trainer, train_result, eval_metrics, eval_split, started, labels=labels)
    training_run.finish(trainer, results, lambda: write_seg_outputs(
        trainer, model_args=asdict(model_args), data_args=asdict(data_args), arrays=arrays, results=results,
        command=training_run.command,
        draw_overlay=lambda path: save_prediction_overlay(path, trainer.model, arrays[eval_split], labels)),
        print_summary, commit_message="Upload STT segmenter")
    return trainer, results


def save_prediction_overlay(path: Path, model, arrays, labels: list[str]) -> None:
    """The first images of a split beside their true and predicted masks (the card shows it)."""
    from .evaluation_seg import predict_maps, save_overlay

    images = arrays.images[:8]
    save_overlay(path, images, arrays.masks[:8], predict_maps(model, images), labels)


def print_summary(results: dict) -> None:
    split = results["eval_split"]
    print_run_summary(results, {k.removeprefix(f"{split}_"): v for k, v in results["eval"].items()
                                if k.removeprefix(f"{split}_") in ("mean_iou", "pixel_accuracy")}, split)

def main(argv: list[str] | None = None) -> dict:
    """Run `stt-hf train-seg` with these command-line arguments; return the results summary."""
    return run(argv)[1]


__all__ = ["SEG_DEFAULTS", "SegDataArguments", "SegModelArguments", "build_model", "main", "run",
           "segmentation_metrics", "write_seg_outputs"]

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
