"""`stt-hf train-caption`: train an STT-encoder image captioner with the HF Seq2SeqTrainer.

Every Seq2SeqTrainingArguments flag works, plus the model and data arguments below and `--config FILE`.
With no arguments it trains on the built-in `fashion_scenes` (offline) and ends in `outputs/<run>/` with
safetensors weights, the model code, tokenizer, image processor, generation config, a model card with
the test-split scores, metrics JSON and training curves. The same recipe with another encoder attention
is one flag away: `--encoder_kwargs '{"channels": [16, 32, 64, 128], "attn_layer": "none"}'` (plain
ResNet) or `"self_attn"`; the JSON replaces the default encoder options (half width, STT over h and w).
A plugged timm CNN encodes as well: `--encoder stt_convnext_s` (its default options: STT over h and w).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import extract_model_from_parallel
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from ..data.captions import load_caption_dataset
from ..data.common import undecoded
from ..hf.captioning import (
    build_captioner,
    decoder_inputs,
    encode_captions,
    train_caption_tokenizer,
)
from ..models.plugin import PLUGGED_MODELS
from ..reporting.publish import write_caption_outputs
from .common import (
    TRAINER_DEFAULTS,
    TrainingRun,
    UserFileMode,
    check_positive,
    check_run,
    image_transforms,
    json_object,
    native_bf16,
    parse_with_config,
    print_run_summary,
    resume_checkpoint,
)
from .evaluation_caption import check_no_repeat_ngram_size, generate_captions

# The fashion_scenes recipe measured in docs/results.md (captioning): 8 epochs of 313 steps, greedy decoding.
CAPTION_DEFAULTS = dict(
    TRAINER_DEFAULTS,
    num_train_epochs=8, warmup_steps=100, logging_steps=10,
    per_device_train_batch_size=64, per_device_eval_batch_size=64,
    eval_on_start=False, save_total_limit=1, metric_for_best_model="cider",
    predict_with_generate=True, generation_num_beams=1,
)
# Half the width of stt_resnet10_s (for CPU budgets), STT over the h and w modes: in the captioning
# comparison (docs/results.md) "hw" had the best mean scores (within the seed spread).
DEFAULT_ENCODER_KWARGS = dict(channels=[16, 32, 64, 128], stt_modes="hw")
# A plugged encoder (stt_convnext_*, stt_efficientnet_*) has no ResNet widths to halve.
PLUGGED_ENCODER_KWARGS = dict(stt_modes="hw")
# Scores computed at each evaluation during training; the final evaluation adds METEOR (slow to start).
TRAINING_METRICS = ("bleu", "rouge_l", "cider")
# What the end-of-run summary prints (the scene metrics only exist for fashion_scenes).
REPORTED_METRICS = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "distinct_ratio", "object_f1",
                    "relation_accuracy")


@dataclass
class CaptionModelArguments:
    encoder: str = field(default="stt_resnet10_s", metadata={
        "help": "Registered timm STT model whose trunk encodes the images (e.g. stt_resnet18_s, or a plugged "
                "timm CNN such as stt_convnext_s)."})
    img_size: int = field(default=64, metadata={"help": "Input size in pixels."})
    encoder_kwargs: str | None = field(default=json.dumps(DEFAULT_ENCODER_KWARGS), metadata={
        "help": 'JSON of encoder options, e.g. \'{"attn_layer": "none"}\' for a plain ResNet or '
                '\'{"attn_layer": "self_attn"}\' for dot-product self-attention. A plugged encoder\'s '
                f'default is {json.dumps(PLUGGED_ENCODER_KWARGS)}.'})
    hidden_size: int = field(default=256, metadata={"help": "Width of encoder tokens and decoder."})
    position_embedding: str = field(default="learned", metadata={"help": "learned, sincos or none."})
    decoder: str = field(default="gpt2", metadata={
        "help": "gpt2 or bert (a small decoder built from a config), or a local pretrained causal LM."})
    decoder_layers: int = field(default=2, metadata={"help": "Layers of a gpt2/bert decoder."})
    decoder_heads: int = field(default=4, metadata={"help": "Attention heads of a gpt2/bert decoder."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "A saved tokenizer (folder or Hub id); default: train a BPE tokenizer on the captions."})
    vocab_size: int = field(default=1000, metadata={"help": "Size of a tokenizer trained here."})
    max_caption_length: int = field(default=32, metadata={
        "help": "Token limit of a caption including the end token; longer captions are truncated."})
    channels_last: bool = field(default=True, metadata={"help": "channels_last memory format."})
    no_repeat_ngram_size: int | None = field(default=None, metadata={
        "help": "Generated captions never repeat an n-gram of this size (0: no limit). Default 3, which "
                "stops loops, except 0 on fashion_scenes, where a limit blocks captions that name two items "
                "of one class ('a t-shirt left of a t-shirt')."})


@dataclass
class CaptionDataArguments:
    dataset: str = field(default="fashion_scenes", metadata={
        "help": "fashion_scenes (built in: Fashion-MNIST items on a canvas, also scored with object F1 and "
                "relation accuracy), tuxpaint or emoji (built in, offline), a local imagefolder with "
                "metadata.csv, a save_to_disk folder, or a Hub dataset id."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    caption_column: str = field(default="caption", metadata={"help": "Column holding the captions."})
    keep_symbols: bool = field(default=False, metadata={
        "help": "tuxpaint: keep the letter, digit and symbol stamps (left out by default)."})
    val_fraction: float = field(default=0.1, metadata={"help": "Validation share when none is given."})
    test_fraction: float = field(default=0.1, metadata={"help": "Test share when none is given."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate validation and test."})
    max_val_samples: int | None = field(default=500, metadata={
        "help": "Truncate validation only (it is captioned at every evaluation during training); the test "
                "split stays whole. 0 or a negative value: no limit beyond max_eval_samples."})
    train_crop_scale: float | None = field(default=None, metadata={
        "help": "Random-resized-crop smallest area; default 1.0 (no crop) on fashion_scenes, whose captions "
                "name every item and where it lies, else 0.8."})
    hflip: float = field(default=0.0, metadata={
        "help": "Horizontal flip probability in training (off by default: captions may say left/right)."})


def run_name(model_args: CaptionModelArguments, data_args: CaptionDataArguments) -> str:
    attn = json_object(model_args.encoder_kwargs, "--encoder_kwargs").get("attn_layer", "stt")
    return f"captioner-{model_args.encoder}-{attn}-{Path(data_args.dataset).name}"


def parse_args(argv: list[str] | None = None):
    model_args, data_args, training_args = parse_with_config(
        (CaptionModelArguments, CaptionDataArguments, Seq2SeqTrainingArguments),
        dict(CAPTION_DEFAULTS, bf16=native_bf16()), argv, prog="stt-hf train-caption", run_name=run_name)
    check_positive(img_size=model_args.img_size, hidden_size=model_args.hidden_size,
                   decoder_layers=model_args.decoder_layers, decoder_heads=model_args.decoder_heads,
                   vocab_size=model_args.vocab_size, max_caption_length=model_args.max_caption_length,
                   max_train_samples=data_args.max_train_samples, max_eval_samples=data_args.max_eval_samples,
                   generation_num_beams=training_args.generation_num_beams)
    resnet_default = model_args.encoder_kwargs == json.dumps(DEFAULT_ENCODER_KWARGS)
    if model_args.encoder in PLUGGED_MODELS and resnet_default:  # resolved here, so the card states it
        model_args.encoder_kwargs = json.dumps(PLUGGED_ENCODER_KWARGS)
    training_args.generation_max_length = model_args.max_caption_length
    if model_args.no_repeat_ngram_size is None:  # resolved here, so the card states the value used
        model_args.no_repeat_ngram_size = 0 if data_args.dataset == "fashion_scenes" else 3
    check_no_repeat_ngram_size(model_args.no_repeat_ngram_size)
    json_object(model_args.encoder_kwargs, "--encoder_kwargs")
    return model_args, data_args, training_args


def load_tokenizer(model_args: CaptionModelArguments, captions: list[str]):
    if model_args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer)
        missing = [t for t in ("bos_token", "eos_token", "pad_token") if getattr(tokenizer, t) is None]
        if missing:
            raise ValueError(f"tokenizer {model_args.tokenizer!r} has no {', '.join(missing)}: the captioner "
                             "needs a start, an end and a padding token")
        tokenizer.model_max_length = model_args.max_caption_length
        return tokenizer
    return train_caption_tokenizer(captions, vocab_size=model_args.vocab_size,
                                   model_max_length=model_args.max_caption_length)


def build_transforms(image_config, data_args: CaptionDataArguments):
    """timm train/eval transforms for the encoder, applied lazily per batch; any PIL mode is converted
    to RGB first."""
    if data_args.train_crop_scale is None:  # resolved here, so the card states the value used
        data_args.train_crop_scale = 1.0 if data_args.dataset == "fashion_scenes" else 0.8
    train_tf, eval_tf = image_transforms(image_config, crop_scale=data_args.train_crop_scale,
                                         hflip=data_args.hflip, ratio=(0.9, 1.1))

    def to_batch(transform):
        def apply(batch):
            return {"pixel_values": [transform(img) for img in batch["image"]],
                    "caption": batch["caption"]}
        return apply

    return to_batch(train_tf), to_batch(eval_tf)


class CaptionCollator:
    """Stacks images and tokenizes captions into -100-padded labels of at most `max_length` tokens."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, examples: list[dict]) -> dict:
        labels = encode_captions(self.tokenizer, [e["caption"] for e in examples], self.max_length)
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]), "labels": labels,
                **decoder_inputs(labels, self.tokenizer.bos_token_id, self.tokenizer.pad_token_id)}


def caption_metrics(tokenizer, metrics: tuple[str, ...] | None = None):
    """compute_metrics for Seq2SeqTrainer: decode generated ids and labels, score with the shipped
    caption metrics (all of them, or only `metrics`)."""
    from ..metrics import compute_caption_metrics, load_metric, ptb_tokenize

    def compute(eval_pred) -> dict[str, float]:
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        predictions = np.where(predictions < 0, tokenizer.pad_token_id, predictions)
        labels = np.where(labels < 0, tokenizer.pad_token_id, labels)
        hyps = [t.strip() for t in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
        refs = [[t.strip()] for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        if metrics is None:
            return compute_caption_metrics(hyps, refs)
        hyps, refs = ptb_tokenize(hyps, refs)
        scores = {}
        for name in metrics:
            scores.update(load_metric(name).compute(predictions=hyps, references=refs, tokenize=False))
        return scores

    return compute


def run(argv: list[str] | None = None):
    """Train, score the test split, write the outputs; return (trainer, results)."""
    model_args, data_args, training_args = parse_args(argv)
    check_run(training_args)  # the schedule, the resume point and the output folder, before any work
    started = time.time()
    val_limits = [n for n in (data_args.max_eval_samples, data_args.max_val_samples) if n and n > 0]
    limits = {"train": data_args.max_train_samples, "validation": min(val_limits, default=None),
              "test": data_args.max_eval_samples}
    # Loading validates: empty or missing captions fail here, naming the rows, before any training.
    dsd = load_caption_dataset(data_args.dataset, image_column=data_args.image_column,
                               caption_column=data_args.caption_column, seed=training_args.seed,
                               val_fraction=data_args.val_fraction, test_fraction=data_args.test_fraction,
                               limits=limits, drop_symbols=not data_args.keep_symbols)
    tokenizer = load_tokenizer(model_args, dsd["train"]["caption"])
    encoder_kwargs = dict(img_size=model_args.img_size, hidden_size=model_args.hidden_size,
                          position_embedding=model_args.position_embedding,
                          **json_object(model_args.encoder_kwargs, "--encoder_kwargs"))
    training_run = TrainingRun("train-caption", argv, training_args)  # the folder locked, every RNG seeded
    model = build_captioner(
        model_args.encoder, tokenizer, decoder=model_args.decoder, encoder_kwargs=encoder_kwargs,
        decoder_kwargs=dict(layers=model_args.decoder_layers, heads=model_args.decoder_heads,
                            max_positions=max(64, model_args.max_caption_length + 1)),
        generation=dict(max_length=model_args.max_caption_length,
                        num_beams=training_args.generation_num_beams or 1,
                        no_repeat_ngram_size=model_args.no_repeat_ngram_size))
    if model_args.channels_last:
        model.encoder.to(memory_format=torch.channels_last)
    train_tf, eval_tf = build_transforms(model.config.encoder, data_args)
    training_args.remove_unused_columns = False  # with_transform datasets need their raw columns

    trainer = Seq2SeqTrainer(
        model=model, args=training_args, train_dataset=undecoded(dsd["train"]).with_transform(train_tf),
        eval_dataset=undecoded(dsd["validation"]).with_transform(eval_tf), processing_class=tokenizer,
        data_collator=CaptionCollator(tokenizer, model_args.max_caption_length),
        compute_metrics=caption_metrics(tokenizer, TRAINING_METRICS), callbacks=[UserFileMode()])
    train_result = training_run.train(trainer, resume_checkpoint(training_args))

    # The test split is captioned as `stt-hf eval-caption` and the pipeline caption it: the saved weights
    # in float32 with the saved image processor, outside the training precision (bf16 autocast), so
    # the scores in the card are the ones a user reproduces.
    model = extract_model_from_parallel(trainer.model, keep_fp32_wrapper=False).eval()
    test_started = time.time()
    generated = generate_captions(model, tokenizer, model.config.encoder.image_processor(),
                                  list(dsd["test"]["image"]), training_args.per_device_eval_batch_size)
    scores = {**score_test_split(dsd["test"], generated),
              "test_runtime": round(time.time() - test_started, 1), "test_samples": len(generated)}
    examples = [dict(reference=r, generated=g)
                for r, g in zip(dsd["test"]["caption"], generated, strict=True)]
    results = training_run.results(trainer, train_result, scores, "test", started,
                                   data_args=asdict(data_args), seed=training_args.seed, examples=examples)
    training_run.finish(trainer, results, lambda: write_caption_outputs(
        trainer, tokenizer=tokenizer, model_args=asdict(model_args), data_args=asdict(data_args), dsd=dsd,
        results=results, command=training_run.command), print_summary, commit_message="Upload STT captioner")
    return trainer, results


def score_test_split(split, generated: list[str]) -> dict[str, float]:
    """Every caption metric of `generated` on `split`, prefixed `test_`: against all references when the
    data has several per image (a `captions` column), plus the scene metrics when it has `objects`."""
    from ..metrics import compute_caption_metrics

    columns = split.column_names
    references = list(split["captions"]) if "captions" in columns else [[c] for c in split["caption"]]
    objects = list(split["objects"]) if "objects" in columns else None
    return {f"test_{k}": v for k, v in compute_caption_metrics(generated, references, objects).items()}


def print_summary(results: dict) -> None:
    print_run_summary(results, {k.removeprefix("test_"): v for k, v in results["eval"].items()
                                if k.removeprefix("test_") in REPORTED_METRICS}, "test")


def main(argv: list[str] | None = None) -> dict:
    return run(argv)[1]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
