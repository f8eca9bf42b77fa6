"""The main job's recipe with every attention module at the same place, on full data, several seeds.

Each run is exactly `stt-hf train` with its defaults (the main job), changing only the dataset, the
seed and the model's `attn_layer` — so every module sits where the default STT block sits (one block
after the last stage of `stt_resnet10_s`). `res_block` is the capacity control: a plain bottleneck
residual block of about STT's parameters and MACs at that place, so a gain that any extra block gives
is not credited to attention. Each finished run is scored again under the ablation's corruptions and
appended to `runs.jsonl`; an interrupted comparison resumes where it stopped.

    python scripts/main_comparison.py                        # all variants, both datasets, 3 seeds
    python scripts/main_comparison.py --datasets mnist_5k    # a subset
    python scripts/main_comparison.py --report_only          # tables and plots from runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .ablation import CORRUPTIONS, corrupt, load_tensors, read_runs, summarize, write_csvs

# name -> the model's attn_layer options (everything else is the main job's default model).
VARIANTS: dict[str, dict] = {
    "plain": dict(attn_layer="none"),
    "res_block": dict(attn_layer="res_block"),
    "se": dict(attn_layer="se"),
    "eca": dict(attn_layer="eca"),
    "self_attn": dict(attn_layer="self_attn"),
    "flat_dense": dict(attn_layer="flat_dense"),
    "stt": dict(attn_layer="stt"),
    "stt_factorized_random": dict(attn_layer="stt", stt_synth="factorized_random"),
}


@dataclass
class ComparisonConfig:
    out_dir: str = "outputs/main_comparison"
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    datasets: list[str] = field(default_factory=lambda: ["mnist_5k", "fashion_mnist"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    train_args: list[str] = field(default_factory=list)  # extra `stt-hf train` flags for every run


def run_name(variant: str, dataset: str, seed: int) -> str:
    return f"{dataset}-{variant}-seed{seed}"


def train_command(config: ComparisonConfig, variant: str, dataset: str, seed: int) -> list[str]:
    """The main job's command line with only the dataset, seed, model options and output folder set."""
    out = Path(config.out_dir) / "runs" / run_name(variant, dataset, seed)
    return [sys.executable, "-m", "stt_hf.cli", "train", "--dataset", dataset, "--seed", str(seed),
            "--model_kwargs", json.dumps(VARIANTS[variant]), "--output_dir", str(out),
            "--disable_tqdm", "true", *config.train_args]


@torch.no_grad()
def robustness(folder: Path, dataset: str) -> dict[str, float]:
    """Test accuracy of a trained folder, clean and under each corruption of the ablation."""
    from transformers import AutoModelForImageClassification

    import stt_hf  # noqa: F401  (registers the Auto classes)

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    data = model.config.data_config
    mean = torch.tensor(data["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data["std"]).view(1, -1, 1, 1)
    images, labels = load_tensors(dataset, None, None)["test"]  # (N, 1, 28, 28) in [0, 1]

    def accuracy(x: torch.Tensor) -> float:
        correct = 0
        for i in range(0, len(labels), 500):
            batch = (x[i:i + 500].expand(-1, 3, -1, -1) - mean) / std
            correct += (model(pixel_values=batch).logits.argmax(-1) == labels[i:i + 500]).sum().item()
        return correct / len(labels)

    scores = {"clean": accuracy(images)}  # fp32, the same path as the corruptions
    scores.update({name: accuracy(corrupt(images, kind, strength))
                   for name, (kind, strength) in CORRUPTIONS.items()})
    return scores


def run_one(config: ComparisonConfig, variant: str, dataset: str, seed: int) -> dict:
    """Train one run with `stt-hf train` in its own process, then score it; returns the row."""
    command = train_command(config, variant, dataset, seed)
    out = Path(command[command.index("--output_dir") + 1])
    shutil.rmtree(out, ignore_errors=True)  # a run interrupted earlier starts over
    started = time.perf_counter()
    log = Path(config.out_dir) / "logs" / f"{run_name(variant, dataset, seed)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {done.returncode}; see {log}")
    wall_s = time.perf_counter() - started
    results = json.loads((out / "metrics.json").read_text())
    split = results["eval_split"]
    for checkpoint in out.glob("checkpoint-*"):  # the final folder holds the best weights
        shutil.rmtree(checkpoint)

    from ..hf.modeling_stt import SttForImageClassification
    from ..reporting.profiling import count_macs, count_params

    model = SttForImageClassification.from_pretrained(out)
    return dict(variant=variant, dataset=dataset, seed=seed, params=count_params(model),
                macs=count_macs(model, model.config.input_size()),
                train_s=round(results["train"]["train_runtime"], 1), wall_s=round(wall_s, 1),
                acc=results["eval"][f"{split}_accuracy"], **robustness(out, dataset))


def run(config: ComparisonConfig) -> list[dict]:
    """Every (dataset, variant, seed) not yet in runs.jsonl, appended as each finishes."""
    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    runs_path = out / "runs.jsonl"
    done = {(r["variant"], r["dataset"], r["seed"]) for r in read_runs(runs_path)}
    # Seed-major, so a partial comparison has every variant at the same number of seeds.
    todo = [(v, d, s) for d in config.datasets for s in config.seeds for v in config.variants
            if (v, d, s) not in done]
    print(f"main comparison: {len(done)} runs done, {len(todo)} to go -> {runs_path}", flush=True)
    started = time.perf_counter()
    for i, (variant, dataset, seed) in enumerate(todo, 1):
        row = run_one(config, variant, dataset, seed)
        with runs_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        eta = (time.perf_counter() - started) / i * (len(todo) - i)
        print(f"[{i}/{len(todo)}] {dataset:13s} {variant:22s} seed {seed}  acc {row['acc']:.4f}  "
              f"train {row['train_s']:.0f}s  (eta {eta / 60:.0f} min)", flush=True)
    return read_runs(runs_path)


def verdict(summary: list[dict], dataset: str, variant: str = "stt",
            against: tuple[str, ...] = ("plain", "res_block"), metric: str = "acc") -> str:
    """Whether `variant` beats each of `against` on `metric` (a fraction; the difference is read in points)
    by more than the larger seed std (one sentence)."""
    by = {r["variant"]: r for r in summary if r["dataset"] == dataset}
    if variant not in by:
        return f"{dataset}: no {variant} runs yet."
    parts = []
    for other in against:
        if other not in by:
            parts.append(f"no {other} runs yet")
            continue
        diff = 100 * (by[variant][metric] - by[other][metric])
        if min(by[variant]["seeds"], by[other]["seeds"]) < 2:  # one run has no spread to compare against
            parts.append(f"not yet comparable with {other} ({diff:+.2f} points; a verdict needs 2+ seeds "
                         f"of each, there are {by[variant]['seeds']} and {by[other]['seeds']})")
            continue
        spread = 100 * max(by[variant][f"{metric}_std"], by[other][f"{metric}_std"])
        word = "ahead of" if diff > spread else "behind" if diff < -spread else "within the seed spread of"
        parts.append(f"{word} {other} ({diff:+.2f} points, spread {spread:.2f})")
    seeds = min(by[v]["seeds"] for v in (variant, *against) if v in by)
    return f"{dataset} ({seeds} seed(s)): {variant} is " + "; ".join(parts) + "."


def markdown(summary: list[dict]) -> str:
    lines = []
    for dataset in sorted({r["dataset"] for r in summary}):
        rows = [r for r in summary if r["dataset"] == dataset]
        lines += [f"### {dataset}", "", verdict(summary, dataset), "",
                  "| variant | seeds | test accuracy (%) | params (M) | MMACs | train time (s) | "
                  + " | ".join(CORRUPTIONS) + " |",
                  "|---|---:|---:|---:|---:|---:|" + "---:|" * len(CORRUPTIONS)]
        for r in rows:
            acc = f"{100 * r['acc']:.2f} ± {100 * r['acc_std']:.2f}"
            lines.append(f"| {r['variant']} | {r['seeds']} | {acc} | "
                         f"{r['params'] / 1e6:.3f} | {r['macs'] / 1e6:.1f} | {r['train_s']:.0f} | "
                         + " | ".join(f"{100 * r[c]:.2f}" for c in CORRUPTIONS) + " |")
        lines.append("")
    return "\n".join(lines)


def report(out_dir: str | Path) -> dict:
    """runs.csv, summary.csv, results.md and accuracy.png from runs.jsonl; returns the summary."""

    out = Path(out_dir)
    runs = read_runs(out / "runs.jsonl")
    if not runs:
        raise FileNotFoundError(f"no runs in {out / 'runs.jsonl'}: run the comparison first")
    summary = summarize(runs, VARIANTS)
    write_csvs(out, runs, summary)
    (out / "results.md").write_text(markdown(summary))
    plot(summary, out / "accuracy.png")
    return dict(runs=len(runs), summary=summary)


def plot(summary: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in summary})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = [r for r in summary if r["dataset"] == dataset]
        colors = ["tab:orange" if r["variant"].startswith("stt") else
                  "tab:gray" if r["variant"] in ("plain", "res_block") else "tab:blue" for r in rows]
        ax.barh([r["variant"] for r in rows], [100 * r["acc"] for r in rows],
                xerr=[100 * r["acc_std"] for r in rows], color=colors)
        low = min(100 * (r["acc"] - r["acc_std"]) for r in rows)
        high = max(100 * (r["acc"] + r["acc_std"]) for r in rows)
        ax.set_xlim(max(0, low - 0.5), min(100, high + 0.5))
        ax.invert_yaxis()
        ax.set(title=f"{dataset}: test accuracy (mean ± std over seeds)", xlabel="accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default=ComparisonConfig.out_dir)
    parser.add_argument("--variants", nargs="+", help=f"subset of {list(VARIANTS)}")
    parser.add_argument("--datasets", nargs="+", help="subset of mnist_5k, fashion_mnist")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--train_args", nargs=argparse.REMAINDER, default=[],
                        help="extra stt-hf train flags for every run (last on the line)")
    parser.add_argument("--report_only", action="store_true", help="only rebuild the tables and plot")
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("variants", "datasets", "seeds") if getattr(args, k)}
    config = ComparisonConfig(out_dir=args.out_dir, train_args=args.train_args, **overrides)
    if not args.report_only:
        run(config)
    result = report(config.out_dir)
    print(f"\n{result['runs']} runs -> {config.out_dir}: results.md, summary.csv, accuracy.png\n")
    print(markdown(result["summary"]))
    return 0
