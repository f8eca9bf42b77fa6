"""`stt-hf eval`: score any saved classifier checkpoint on a dataset split and write metrics JSON."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from transformers import Trainer, TrainingArguments

from ..data.classification import load_image_dataset, validate_dataset
from ..data.common import undecoded
from ..metrics import compute_classification_metrics
from ..reporting.publish import check_output_file, write_json
from .common import DataArguments, add_source_arguments, build_transforms, check_positive, collate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser, model_help="checkpoint folder (transformers format) or Hub id",
                         dataset="fashion_mnist", trainer="train")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the split/subset selection; stt-hf train's default, so both score "
                             "the same images")
    parser.add_argument("--output", default=None,
                        help="metrics JSON path (default: <model>/eval_<split>.json)")


def check_arguments(args: argparse.Namespace) -> None:
    """The flag values, before any work."""
    check_positive(batch_size=args.batch_size, max_eval_samples=args.max_eval_samples)
    check_output_file(args.output, "--output", ".json")


def run(args: argparse.Namespace) -> dict:
    from ..hf.modeling_stt import SttForImageClassification

    check_arguments(args)
    model = SttForImageClassification.from_pretrained(args.model).eval()
    dsd = load_image_dataset(args.dataset, image_column=args.image_column, label_column=args.label_column,
                             max_eval_samples=args.max_eval_samples, seed=args.seed)
    split = args.split or ("test" if "test" in dsd else "validation")
    if split not in dsd:
        raise ValueError(f"--split {split!r} is not in the dataset; it has {sorted(dsd)}")
    names = dsd[split].features["label"].names
    if len(names) != model.config.num_labels:
        raise ValueError(f"the model predicts {model.config.num_labels} classes, the dataset has "
                         f"{len(names)} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
                         "score it on data with the classes it was trained on")
    validate_dataset(dsd, num_labels=model.config.num_labels)
    _, eval_tf = build_transforms(model, DataArguments(dataset=args.dataset))
    with tempfile.TemporaryDirectory() as scratch:
        targs = TrainingArguments(output_dir=scratch, per_device_eval_batch_size=args.batch_size,
                                  report_to="none", remove_unused_columns=False, dataloader_pin_memory=False)
        trainer = Trainer(model=model, args=targs, data_collator=collate,
                          compute_metrics=compute_classification_metrics)
        metrics = trainer.evaluate(undecoded(dsd[split]).with_transform(eval_tf), metric_key_prefix=split)
    result = dict(model=str(args.model), dataset=args.dataset, split=split, samples=len(dsd[split]),
                  metrics={k.removeprefix(f"{split}_"): v for k, v in metrics.items()})
    default_dir = Path(args.model) if Path(args.model).is_dir() else Path(".")
    out = Path(args.output) if args.output else default_dir / f"eval_{split}.json"
    write_json(out, result)
    print(f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()
                                    if k in ("accuracy", "top5_accuracy", "macro_f1")))
    print(f"metrics written to {out}")
    return result
