"""One captioning recipe, five encoders, several seeds: which attention should the captioner's encoder use?

Each run is `stt-hf train-caption` with its defaults (or the arguments given after `--`), changing only
the dataset, the seed and the encoder's attention options (ENCODERS, set on top of train-caption's
`encoder_kwargs`), so every attention module sits where the default STT block sits. Runs go in their
own processes, seed-major (a partial comparison has every encoder at the same number of seeds), and
each finished run is appended to `runs.jsonl` with its test scores, sizes, times and first examples; an
interrupted comparison resumes where it stopped (the interrupted run starts over). The report writes
runs.csv, summary.csv, results.md (mean ± std over seeds of every score, train time per run, and
whether STT is ahead of the plain encoder beyond the seed spread) and examples.png (test images with
the reference and each encoder's caption; examples-<dataset>.png when runs.jsonl holds several
datasets).

    python scripts/caption_comparison.py                         # 5 encoders x 3 seeds on fashion_scenes
    python scripts/caption_comparison.py --encoders stt plain --seeds 0 1
    python scripts/caption_comparison.py --dataset tuxpaint --out_dir outputs/caption_comparison_tux
    python scripts/caption_comparison.py -- --num_train_epochs 5   # anything after -- goes to train-caption
    python scripts/caption_comparison.py --report_only           # tables and grid from runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .ablation import read_runs, summarize, write_csvs

# name -> encoder options set on top of train-caption's `encoder_kwargs` (everything else is the recipe's).
ENCODERS: dict[str, dict] = {
    "stt": dict(attn_layer="stt"),
    "plain": dict(attn_layer="none"),
    "self_attn": dict(attn_layer="self_attn"),
    "flat_dense": dict(attn_layer="flat_dense"),
    "stt_hw": dict(attn_layer="stt", stt_modes="hw"),
}
# Test scores of a run's metrics.json, in table order; the scene ones exist only for fashion_scenes.
METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "distinct_ratio",
           "object_f1", "relation_accuracy")
EXAMPLES = 16  # (reference, generated) pairs kept per run for the grid
# Set by the comparison itself, so not accepted among the train-caption arguments.
OWN_FLAGS = {"--dataset": "--dataset", "--seed": "--seeds", "--output_dir": "--out_dir"}


@dataclass
class CaptionComparisonConfig:
    out_dir: str = "outputs/caption_comparison"
    encoders: list[str] = field(default_factory=lambda: list(ENCODERS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    dataset: str = "fashion_scenes"
    train_args: list[str] = field(default_factory=list)  # extra `stt-hf train-caption` flags for every run


def run_name(encoder: str, seed: int) -> str:
    return f"{encoder}-seed{seed}"


def encoder_kwargs(train_args: list[str], encoder: str) -> dict:
    """The run's encoder options: those given (or train-caption's default) with ENCODERS[encoder] on top."""
    from ..tasks.train_caption import CaptionModelArguments

    given = (train_args[train_args.index("--encoder_kwargs") + 1] if "--encoder_kwargs" in train_args
             else CaptionModelArguments().encoder_kwargs)
    return {**json.loads(given or "{}"), **ENCODERS[encoder]}


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


def train_command(config: CaptionComparisonConfig, encoder: str, seed: int) -> list[str]:
    """train-caption with the given arguments and only the dataset, seed, encoder options and folder set."""
    out = Path(config.out_dir) / "runs" / run_name(encoder, seed)
    return [sys.executable, "-m", "stt_hf.cli", "train-caption",
            *_without(config.train_args, "--encoder_kwargs"), "--dataset", config.dataset,
            "--seed", str(seed),
            "--encoder_kwargs", json.dumps(encoder_kwargs(config.train_args, encoder)),
            "--output_dir", str(out), "--disable_tqdm", "true"]


def primary_metric(row: dict) -> str:
    """What the verdict and the progress lines read: object F1 on scenes, else CIDEr."""
    return "object_f1" if "object_f1" in row else "cider"


def run_one(config: CaptionComparisonConfig, encoder: str, seed: int) -> dict:
    """Train one run with `stt-hf train-caption` in its own process; returns its runs.jsonl row."""
    command = train_command(config, encoder, seed)
    out = Path(command[command.index("--output_dir") + 1])
    shutil.rmtree(out, ignore_errors=True)  # a run interrupted earlier starts over
    log = Path(config.out_dir) / "logs" / f"{run_name(encoder, seed)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {done.returncode}; see {log}")
    wall_s = time.perf_counter() - started
    results = json.loads((out / "metrics.json").read_text())
    for checkpoint in out.glob("checkpoint-*"):  # the final folder holds the best weights
        shutil.rmtree(checkpoint)

    from ..hf.modeling_stt import SttCaptioner
    from ..reporting.profiling import count_params

    model = SttCaptioner.from_pretrained(out)
    scores = {k: results["metrics"][k] for k in METRICS if k in results["metrics"]}
    return dict(encoder=encoder, seed=seed, dataset=config.dataset, **scores,
                encoder_params=count_params(model.encoder), params=count_params(model),
                train_s=round(results["train"]["train_runtime"], 1), wall_s=round(wall_s, 1),
                data_args=results["data_args"], examples=results["examples"][:EXAMPLES])


def run(config: CaptionComparisonConfig) -> list[dict]:
    """Every (encoder, seed) on the dataset not yet in runs.jsonl, appended as each finishes."""
    unknown = [e for e in config.encoders if e not in ENCODERS]
    if unknown:
        raise ValueError(f"unknown encoders {unknown}; known: {list(ENCODERS)}")
    own = [flag for flag in OWN_FLAGS if flag in config.train_args]
    if own:
        raise ValueError(f"{own} among the train-caption arguments: set them with the comparison's "
                         f"{[OWN_FLAGS[f] for f in own]}")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    runs_path = out / "runs.jsonl"
    done = {(r["encoder"], r["dataset"], r["seed"]) for r in read_runs(runs_path)}
    # Seed-major, so a partial comparison has every encoder at the same number of seeds.
    todo = [(e, s) for s in config.seeds for e in config.encoders if (e, config.dataset, s) not in done]
    print(f"caption comparison on {config.dataset}: {len(done)} runs done, {len(todo)} to go -> {runs_path}",
          flush=True)
    started = time.perf_counter()
    for i, (encoder, seed) in enumerate(todo, 1):
        row = run_one(config, encoder, seed)
        with runs_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        metric = primary_metric(row)
        eta = (time.perf_counter() - started) / i * (len(todo) - i)
        print(f"[{i}/{len(todo)}] {encoder:10s} seed {seed}  {metric} {row[metric]:.4f}  "
              f"cider {row['cider']:.4f}  train {row['train_s']:.0f}s  (eta {eta / 60:.0f} min)", flush=True)
    return read_runs(runs_path)


# --------------------------------------------------------------------------------------- report


def summarize_runs(runs: list[dict]) -> list[dict]:
    """Mean and sample std over seeds of every score, per (dataset, encoder), in ENCODERS order."""
    return summarize(runs, ENCODERS, key="encoder", metrics=METRICS, costs=("encoder_params", "params"))


def verdict(summary: list[dict], dataset: str, encoder: str = "stt",
            against: tuple[str, ...] = ("plain", "self_attn")) -> str:
    """Whether `encoder` beats each of `against` by more than the larger seed std of the primary metric."""
    by = {r["encoder"]: r for r in summary if r["dataset"] == dataset}
    if encoder not in by:
        return f"{dataset}: no {encoder} runs yet."
    metric = primary_metric(by[encoder])
    parts = []
    for other in against:
        if other not in by:
            parts.append(f"no {other} runs yet")
            continue
        diff = by[encoder][metric] - by[other][metric]
        if min(by[encoder]["seeds"], by[other]["seeds"]) < 2:  # one run has no spread to compare against
            parts.append(f"not yet comparable with {other} ({diff:+.4f}; a verdict needs 2+ seeds of each, "
                         f"there are {by[encoder]['seeds']} and {by[other]['seeds']})")
            continue
        spread = max(by[encoder][f"{metric}_std"], by[other][f"{metric}_std"])
        word = "ahead of" if diff > spread else "behind" if diff < -spread else "within the seed spread of"
        parts.append(f"{word} {other} ({diff:+.4f}, spread {spread:.4f})")
    seeds = min(by[e]["seeds"] for e in (encoder, *against) if e in by)
    return f"{dataset} ({seeds} seed(s)), by test {metric}: {encoder} is " + "; ".join(parts) + "."


def markdown(summary: list[dict]) -> str:
    lines = []
    for dataset in sorted({r["dataset"] for r in summary}):
        rows = [r for r in summary if r["dataset"] == dataset]
        metrics = [m for m in METRICS if all(m in r for r in rows)]
        lines += [f"### {dataset}", "", verdict(summary, dataset), "",
                  "Test-split scores, mean ± std over seeds; train time is per run.", "",
                  "| encoder | seeds | " + " | ".join(metrics)
                  + " | encoder params (M) | params (M) | train time (s) |",
                  "|---|---:|" + "---:|" * (len(metrics) + 3)]
        for r in rows:
            lines.append(f"| {r['encoder']} | {r['seeds']} | "
                         + " | ".join(f"{r[m]:.4f} ± {r[f'{m}_std']:.4f}" for m in metrics)
                         + f" | {r['encoder_params'] / 1e6:.3f} | {r['params'] / 1e6:.3f} "
                         f"| {r['train_s']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def report(out_dir: str | Path) -> dict:
    """runs.csv, summary.csv, results.md and the example grid(s) from runs.jsonl; returns the summary."""
    out = Path(out_dir)
    runs = read_runs(out / "runs.jsonl")
    if not runs:
        raise FileNotFoundError(f"no runs in {out / 'runs.jsonl'}: run the comparison first")
    summary = summarize_runs(runs)
    flat = [{k: v for k, v in r.items() if k not in ("data_args", "examples")} for r in runs]
    write_csvs(out, flat, summary)
    (out / "results.md").write_text(markdown(summary))
    datasets = sorted({r["dataset"] for r in runs})
    grids = [grid(runs, d, out / ("examples.png" if len(datasets) == 1 else f"examples-{d}.png"))
             for d in datasets]
    return dict(runs=len(runs), summary=summary, grids=grids)


def grid(runs: list[dict], dataset: str, path: Path, count: int = 8) -> Path:
    """Test images with the reference and each encoder's caption, from each encoder's lowest-seed run
    (the test split is the same for every encoder at one seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in runs if r["dataset"] == dataset]
    seed = min(r["seed"] for r in rows)
    order = {e: i for i, e in enumerate(ENCODERS)}
    picked = sorted((r for r in rows if r["seed"] == seed), key=lambda r: order.get(r["encoder"], len(order)))
    images, captions = load_test_images(picked[0]["data_args"], seed)
    references = [e["reference"] for e in picked[0]["examples"]]
    if captions[:len(references)] != references:
        raise ValueError(f"the test split of {dataset} loaded again does not match the runs' examples "
                         f"({captions[:2]} vs {references[:2]}): was the dataset changed since?")
    count = min(count, len(images), *(len(r["examples"]) for r in picked))
    cols = 4
    n_rows = -(-count // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, (2.6 + 0.25 * len(picked)) * n_rows),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        ax.imshow(images[i])
        lines = [f"ref: {picked[0]['examples'][i]['reference']}"]
        lines += [f"{r['encoder']}: {r['examples'][i]['generated']}" for r in picked]
        ax.set_title("\n".join(textwrap.shorten(t, 52) for t in lines), fontsize=8, loc="left")
    fig.suptitle(f"{dataset}: test images, reference and each encoder's caption (seed {seed})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def load_test_images(data: dict, seed: int) -> tuple[list, list[str]]:
    """The test images and captions of a run, in the order of its examples: its dataset loaded as the run
    loaded it (`data`: the run's data arguments from metrics.json)."""
    from ..data.captions import load_caption_dataset
    from ..data.common import to_rgb

    limits = {"train": data["max_train_samples"], "validation": data["max_eval_samples"],
              "test": data["max_eval_samples"]}
    dsd = load_caption_dataset(data["dataset"], image_column=data["image_column"],
                               caption_column=data["caption_column"], seed=seed,
                               val_fraction=data["val_fraction"], test_fraction=data["test_fraction"],
                               drop_symbols=not data["keep_symbols"], limits=limits)
    return [to_rgb(img) for img in dsd["test"]["image"]], list(dsd["test"]["caption"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default=CaptionComparisonConfig.out_dir)
    parser.add_argument("--encoders", nargs="+", help=f"subset of {list(ENCODERS)}")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2")
    parser.add_argument("--dataset", default=CaptionComparisonConfig.dataset,
                        help="any train-caption --dataset (default: fashion_scenes)")
    parser.add_argument("--report_only", action="store_true", help="only rebuild the tables and the grid")
    parser.add_argument("train_args", nargs="*", help="after --: arguments for stt-hf train-caption")
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("encoders", "seeds") if getattr(args, k)}
    config = CaptionComparisonConfig(out_dir=args.out_dir, dataset=args.dataset, train_args=args.train_args,
                                     **overrides)
    if not args.report_only:
        run(config)
    result = report(config.out_dir)
    print(f"\n{result['runs']} runs -> {config.out_dir}: results.md, summary.csv, "
          + ", ".join(p.name for p in result["grids"]) + "\n")
    print(markdown(result["summary"]))
    return 0
