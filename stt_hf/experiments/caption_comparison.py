"""One captioning recipe, three encoders: STT, a plain ResNet and dot-product self-attention.

Runs `stt-hf train-caption` once per encoder with the same arguments (only `attn_layer` differs) and
writes a Markdown table of the test-split scores, results.json, and a PNG grid of test images with the
reference caption and each encoder's caption.

    python scripts/caption_comparison.py                       # the default recipe on Tux Paint
    python scripts/caption_comparison.py -- --num_train_epochs 5   # anything after -- goes to train-caption
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

ENCODERS = {"stt": "stt", "plain": "none", "self_attn": "self_attn"}
SCORES = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider")


def run(out_dir: str | Path, encoders: list[str], train_args: list[str]) -> dict:
    from ..tasks.train_caption import main as train_caption

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in encoders:
        print(f"\n== {name} encoder (attn_layer={ENCODERS[name]})", flush=True)
        kwargs = _encoder_kwargs(train_args, ENCODERS[name])
        args = [*_without(train_args, "--encoder_kwargs"), "--encoder_kwargs", json.dumps(kwargs),
                "--output_dir", str(out / name)]
        results[name] = train_caption(args)
    summary = {name: dict(scores={k.removeprefix("test_"): v for k, v in r["eval"].items()
                                  if k.removeprefix("test_") in (*SCORES, "bleu_2", "bleu_3")},
                          wall_time_s=r["wall_time_s"], examples=r["examples"])
               for name, r in results.items()}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(markdown(summary))
    grid(summary, results, out / "examples.png")
    return summary


def _without(args: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        else:
            out.append(a)
    return out


def _encoder_kwargs(args: list[str], attn_layer: str) -> dict:
    """The run's encoder options (given, or train-caption's default) with `attn_layer` set."""
    from ..tasks.train_caption import CaptionModelArguments

    given = (args[args.index("--encoder_kwargs") + 1] if "--encoder_kwargs" in args
             else CaptionModelArguments().encoder_kwargs)
    return {**json.loads(given or "{}"), "attn_layer": attn_layer}


def markdown(summary: dict) -> str:
    lines = ["| encoder | " + " | ".join(SCORES) + " | train+eval time (s) |",
             "|---|" + "---:|" * (len(SCORES) + 1)]
    for name, r in summary.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['scores'][s]:.4f}" for s in SCORES)
                     + f" | {r['wall_time_s']:.0f} |")
    return "\n".join(lines) + "\n"


def grid(summary: dict, results: dict, path: Path, count: int = 8) -> Path:
    """Test images with the reference and each encoder's caption (the test split is the same for all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(results.values()))
    names = list(summary)
    examples = [summary[n]["examples"] for n in names]
    images = _test_images(first)
    count = min(count, len(images))
    cols = 4
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        ax.imshow(images[i])
        lines = [f"ref: {examples[0][i]['reference']}"]
        lines += [f"{n}: {ex[i]['generated']}" for n, ex in zip(names, examples, strict=True)]
        ax.set_title("\n".join(textwrap.shorten(t, 48) for t in lines), fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _test_images(result: dict) -> list:
    """The test images of a run, in the order of its examples (same dataset, seed and limits)."""
    from ..data.captions import load_caption_dataset
    from ..data.common import to_rgb

    data = result["data_args"]
    dsd = load_caption_dataset(data["dataset"], image_column=data["image_column"],
                               caption_column=data["caption_column"], seed=result["seed"],
                               val_fraction=data["val_fraction"], test_fraction=data["test_fraction"],
                               drop_symbols=not data["keep_symbols"],
                               limits={"test": data["max_eval_samples"]})
    return [to_rgb(img) for img in dsd["test"]["image"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default="outputs/caption_comparison")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("train_args", nargs="*", help="after --: arguments for stt-hf train-caption")
    args = parser.parse_args(argv)
    summary = run(args.out_dir, args.encoders, args.train_args)
    print("\n" + markdown(summary))
    print(f"written: {args.out_dir}/results.md, results.json, examples.png")
    return 0
