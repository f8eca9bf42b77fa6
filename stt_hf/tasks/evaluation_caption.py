"""`stt-hf eval-caption`: score any saved captioner on a dataset split and write metrics JSON.

A dataset with a `captions` column (several references per image) is scored against all of them; one with
an `objects` column (`fashion_scenes`) also gets the scene metrics object F1 and relation accuracy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data.captions import load_caption_dataset
from ..data.common import to_rgb
from ..metrics import compute_caption_metrics
from ..reporting.publish import check_output_file, write_json
from .common import add_source_arguments, check_positive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser, model_help="captioner folder (or Hub id) with its tokenizer",
                         dataset="fashion_scenes", trainer="train-caption", split="test")
    parser.add_argument("--caption_column", default="caption")
    parser.add_argument("--keep_symbols", action="store_true", help="tuxpaint: keep the symbol stamps")
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_beams", type=int, default=None, help="default: the saved generation config")
    parser.add_argument("--no_repeat_ngram_size", type=int, default=None,
                        help="no repeated n-grams of this size in the captions, 0: no limit (default: the "
                             "saved generation config)")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the split selection; stt-hf train-caption's default, so both score "
                             "the same images")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="load with the checkpoint's own code instead of this package's")
    parser.add_argument("--output", default=None, help="metrics JSON (default: <model>/eval_<split>.json)")


def check_no_repeat_ngram_size(size: int) -> None:
    """The n-gram limit of generation: 0 (none) or a positive size; anything else is an error."""
    if size < 0:
        raise ValueError(f"--no_repeat_ngram_size must be 0 (no limit) or a positive n-gram size, got {size}")


def load_captioner(path: str, trust_remote_code: bool = False):
    """(model, tokenizer, image processor) of a saved captioner."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code).eval()
    return model, AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)


@torch.inference_mode()
def generate_captions(model, tokenizer, image_processor, images, batch_size: int = 32, **generate_kwargs):
    """Captions for a list of PIL images (any mode), batch by batch."""
    captions = []
    for i in range(0, len(images), batch_size):
        batch = [to_rgb(img) for img in images[i:i + batch_size]]
        pixel_values = image_processor(images=batch, return_tensors="pt")["pixel_values"].to(model.dtype)
        ids = model.generate(pixel_values=pixel_values, **generate_kwargs)
        captions += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return captions


def check_arguments(args: argparse.Namespace) -> None:
    """The flag values, before any work."""
    check_positive(batch_size=args.batch_size, num_beams=args.num_beams,
                   max_eval_samples=args.max_eval_samples)
    check_output_file(args.output, "--output", ".json")
    if args.no_repeat_ngram_size is not None:
        check_no_repeat_ngram_size(args.no_repeat_ngram_size)


def run(args: argparse.Namespace) -> dict:
    check_arguments(args)
    model, tokenizer, image_processor = load_captioner(args.model, args.trust_remote_code)
    dsd = load_caption_dataset(args.dataset, image_column=args.image_column,
                               caption_column=args.caption_column, seed=args.seed,
                               drop_symbols=not args.keep_symbols,
                               limits={args.split: args.max_eval_samples})
    if args.split not in dsd:
        raise ValueError(f"--split {args.split!r} is not in the dataset; it has {sorted(dsd)}")
    data = dsd[args.split]
    generate_kwargs = {"num_beams": args.num_beams} if args.num_beams is not None else {}
    if args.no_repeat_ngram_size is not None:
        generate_kwargs["no_repeat_ngram_size"] = args.no_repeat_ngram_size
    generated = generate_captions(model, tokenizer, image_processor, list(data["image"]), args.batch_size,
                                  **generate_kwargs)
    references = list(data["captions"]) if "captions" in data.column_names else [[c] for c in data["caption"]]
    objects = list(data["objects"]) if "objects" in data.column_names else None
    metrics = compute_caption_metrics(generated, references, objects)
    saved = model.generation_config
    decoding = {"num_beams": saved.num_beams, "no_repeat_ngram_size": saved.no_repeat_ngram_size or 0,
                **generate_kwargs}  # what the captions were decoded with
    result = dict(model=str(args.model), dataset=args.dataset, split=args.split, samples=len(data),
                  decoding=decoding, metrics=metrics, examples=[dict(reference=r, generated=g)
                                             for r, g in zip(data["caption"], generated, strict=True)])
    default_dir = Path(args.model) if Path(args.model).is_dir() else Path(".")
    out = Path(args.output) if args.output else default_dir / f"eval_{args.split}.json"
    write_json(out, result)
    print(f"{args.split} ({len(data)} images): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print(f"metrics written to {out}")
    return result
