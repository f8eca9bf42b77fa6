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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .ablation import CORRUPTIONS, corrupt, load_tensors
from .ablation import VARIANTS as ABLATION_VARIANTS
from .runs import (
    ComparisonRuns,
    Trained,
    check_known,
    cli_command,
    drop_checkpoints,
    holm,
    interval_cell,
    p_against,
    p_cell,
    run_and_report,
    run_missing,
    seed_verdict,
    summarize,
    train,
    variant_bars,
    welch_interval,
    welch_p,
    write_report,
)

# name -> the model's attn_layer options (everything else is the main job's default model): the ablation's
# variants of the same names, STT with its defaults as "stt", the capacity control and the axial baselines.
OWN_VARIANTS = {"res_block": dict(attn_layer="res_block"), "axial": dict(attn_layer="axial"),
                "criss_cross": dict(attn_layer="criss_cross"), "stt": ABLATION_VARIANTS["stt_dense"]}
VARIANTS: dict[str, dict] = {
    name: dict(OWN_VARIANTS.get(name) or ABLATION_VARIANTS[name])
    for name in ("plain", "res_block", "se", "eca", "self_attn", "axial", "criss_cross", "flat_dense", "stt",
                 "stt_factorized_random")
}


@dataclass
class ComparisonConfig(ComparisonRuns):
    out_dir: str = "outputs/main_comparison"
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    datasets: list[str] = field(default_factory=lambda: ["mnist_5k", "fashion_mnist"])


def run_name(variant: str, dataset: str, seed: int) -> str:
    return f"{dataset}-{variant}-seed{seed}"


def train_command(config: ComparisonConfig, variant: str, dataset: str, seed: int) -> list[str]:
    """The main job's command line with only the dataset, seed, model options and output folder set."""
    out = Path(config.out_dir) / "runs" / run_name(variant, dataset, seed)
    return cli_command("train", out, "--dataset", dataset, "--seed", str(seed),
                       "--model_kwargs", json.dumps(VARIANTS[variant]), extra=config.train_args)


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


def measure(trained: Trained, dataset: str) -> dict:
    """What a row says of a trained classifier: size, cost, time, test accuracy and robustness."""
    from transformers import AutoModelForImageClassification

    from ..reporting.profiling import count_macs, count_params

    results = trained.results
    model = AutoModelForImageClassification.from_pretrained(trained.out)
    return dict(params=count_params(model), macs=count_macs(model, model.config.input_size()),
                train_s=round(results["train"]["train_runtime"], 1), wall_s=round(trained.wall_s, 1),
                acc=results["eval"][f"{results['eval_split']}_accuracy"], **robustness(trained.out, dataset))


def run_one(config: ComparisonConfig, variant: str, dataset: str, seed: int) -> dict:
    """Train one run with `stt-hf train` in its own process, then score it; returns the row."""
    command = train_command(config, variant, dataset, seed)
    trained = train(command, Path(config.out_dir) / "logs" / f"{run_name(variant, dataset, seed)}.log")
    drop_checkpoints(trained.out)
    return dict(variant=variant, dataset=dataset, seed=seed, **measure(trained, dataset))


def describe(row: dict) -> str:
    return (f"{row['dataset']:13s} {row['variant']:22s} seed {row['seed']}  acc {row['acc']:.4f}  "
            f"train {row['train_s']:.0f}s")


def run(config: ComparisonConfig) -> list[dict]:
    """Every (dataset, variant, seed) not yet in runs.jsonl, appended as each finishes."""
    check_known(config.variants, VARIANTS)
    jobs = [(v, d, s) for d in config.datasets for s in config.seeds for v in config.variants]  # seed-major
    return run_missing(config, ("variant", "dataset", "seed"), jobs, partial(run_one, config), describe,
                       "main comparison")


def verdict(summary: list[dict], dataset: str, variant: str = "stt",
            against: tuple[str, ...] = ("plain", "res_block"), metric: str = "acc") -> str:
    """Whether `variant` beats each of `against` on `metric` (a fraction; the difference is read in points)
    by more than the larger seed std (one sentence)."""
    return seed_verdict(summary, dataset, variant, against, metric)


def seeds_of(runs: list[dict], dataset: str, variant: str, metric: str) -> list[float]:
    return [r[metric] for r in runs if r["dataset"] == dataset and r["variant"] == variant]


def summarize_runs(runs: list[dict]) -> list[dict]:
    """Mean and sample std over seeds of the clean and corrupted accuracies, per (dataset, variant), and
    against STT's test accuracies: `p_vs_stt`, Welch's t-test p-value (None for STT); `p_holm`, the same
    Holm-adjusted over STT vs every other variant of the dataset; `stt_minus`, STT's mean minus the
    variant's with its 95% Welch interval (None where a side has fewer than 2 seeds)."""
    summary = summarize(runs, VARIANTS, metrics=("acc", *CORRUPTIONS))
    for dataset in {r["dataset"] for r in summary}:
        rows = [r for r in summary if r["dataset"] == dataset]
        same_dataset = [r for r in runs if r["dataset"] == dataset]
        for row in rows:
            row["p_vs_stt"] = p_against(same_dataset, row["variant"], "stt", "acc")
            row["stt_minus"] = (None if row["variant"] == "stt" else
                                welch_interval(seeds_of(runs, dataset, "stt", "acc"),
                                               seeds_of(runs, dataset, row["variant"], "acc")))
        adjusted = holm({r["variant"]: r["p_vs_stt"] for r in rows})
        for row in rows:
            row["p_holm"] = adjusted[row["variant"]]
    return summary


def significance(summary: list[dict], dataset: str, other: str = "plain") -> str:
    """One sentence: STT minus `other` with its 95% interval, the raw and Holm-adjusted p, and what they
    allow one to say at the 5% level."""
    by = {r["variant"]: r for r in summary if r["dataset"] == dataset}
    if "stt" not in by or other not in by or by[other].get("stt_minus") is None:
        return f"{dataset}: STT vs {other} needs 2+ seeds of each."
    diff, low, high = (100 * v for v in by[other]["stt_minus"])
    p, p_holm = by[other]["p_vs_stt"], by[other]["p_holm"]
    family = sum(r.get("p_vs_stt") is not None for r in by.values())
    if p_holm < 0.05:
        words = f"STT is {'ahead of' if diff > 0 else 'behind'} {other}, also after the correction"
    elif p < 0.05:
        words = (f"significant uncorrected, not after correcting for the {family} comparisons: the data do "
                 f"not show a difference between STT and {other}")
    else:
        words = f"STT and {other} are not separated"
    return (f"STT - {other}: {diff:+.2f} points, 95% interval [{low:+.2f}, {high:+.2f}] (Welch); "
            f"p = {p:.3f} raw, {p_holm:.3f} Holm-adjusted over STT vs the {family} other variants: {words}.")


def markdown(summary: list[dict]) -> str:
    lines = []
    for dataset in sorted({r["dataset"] for r in summary}):
        rows = [r for r in summary if r["dataset"] == dataset]
        lines += [f"### {dataset}", "", verdict(summary, dataset), "", significance(summary, dataset), "",
                  "p vs stt: Welch's t-test over the seeds' test accuracies (two-sided; - where a side has "
                  "fewer than 2 seeds); Holm: the same p-values adjusted by Holm's method over STT vs every "
                  "other variant here; stt - it: STT's mean accuracy minus the variant's, in points, with "
                  "its 95% Welch interval.", "",
                  "| variant | seeds | test accuracy (%) | p vs stt | Holm | stt - it [95% CI] | params (M) "
                  "| MMACs | train time (s) | " + " | ".join(CORRUPTIONS) + " |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(CORRUPTIONS)]
        for r in rows:
            acc = f"{100 * r['acc']:.2f} ± {100 * r['acc_std']:.2f}"
            lines.append(f"| {r['variant']} | {r['seeds']} | {acc} | {p_cell(r.get('p_vs_stt'))} | "
                         f"{p_cell(r.get('p_holm'))} | {interval_cell(r.get('stt_minus'))} | "
                         f"{r['params'] / 1e6:.3f} | {r['macs'] / 1e6:.1f} | {r['train_s']:.0f} | "
                         + " | ".join(f"{100 * r[c]:.2f}" for c in CORRUPTIONS) + " |")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- robustness

PEERS = ("self_attn", "axial")  # what the paper's robustness claim is read against


def robustness_rows(runs: list[dict], dataset: str, peers: tuple[str, ...] = PEERS) -> list[dict]:
    """Per corruption, and for the mean over corruptions of each run: STT's and each peer's accuracy
    (mean, std, seeds) and, for each peer, STT minus it with its 95% Welch interval, Welch's p and Holm's
    adjustment. The Holm family is STT vs each peer under each corruption (len(CORRUPTIONS) x len(peers)
    tests); the mean row is a family of its own (one test per peer)."""
    def mean_corrupted(r: dict) -> float:
        return float(np.mean([r[c] for c in CORRUPTIONS]))

    metrics = {c: c for c in CORRUPTIONS} | {"mean": None}
    rows = []
    for name, metric in metrics.items():
        values = {v: [r[metric] if metric else mean_corrupted(r) for r in runs
                      if r["dataset"] == dataset and r["variant"] == v] for v in ("stt", *peers)}
        row = dict(corruption=name, **{f"{v}_seeds": values[v] for v in values})
        for peer in peers:
            row[f"{peer}_p"] = welch_p(values["stt"], values[peer])
            row[f"{peer}_ci"] = welch_interval(values["stt"], values[peer])
        rows.append(row)
    for family in (rows[:-1], rows[-1:]):
        adjusted = holm({(i, peer): row[f"{peer}_p"] for i, row in enumerate(family) for peer in peers})
        for (i, peer), p in adjusted.items():
            family[i][f"{peer}_holm"] = p
    return rows


def robustness_verdict(rows: list[dict], peer: str = "self_attn") -> str:
    """Whether "keeping robustness compared to" `peer` holds, in the words the statistics allow."""
    mean = rows[-1]
    if mean[f"{peer}_ci"] is None:
        return f"Not yet answerable against {peer}: it needs 2+ seeds of STT and of {peer}."
    diff, low, high = (100 * v for v in mean[f"{peer}_ci"])
    behind = [r["corruption"] for r in rows[:-1] if r[f"{peer}_holm"] is not None
              and r[f"{peer}_holm"] < 0.05 and r[f"{peer}_ci"][0] < 0]
    ahead = [r["corruption"] for r in rows[:-1] if r[f"{peer}_holm"] is not None
             and r[f"{peer}_holm"] < 0.05 and r[f"{peer}_ci"][0] > 0]
    averaged = (f"averaged over the corruptions STT - {peer} is {diff:+.2f} points, 95% interval "
                f"[{low:+.2f}, {high:+.2f}]")
    per_corruption = (f"behind it beyond chance (Holm p < 0.05) under {', '.join(behind) or 'no corruption'}"
                      f", ahead under {', '.join(ahead) or 'none'}")
    if low > 0:
        claim = "holds: STT is more robust"
    elif high < 0:
        claim = "does not hold: STT is less robust"
    elif behind:
        claim = "does not hold under every corruption"
    else:
        claim = "is not contradicted, nor shown: the interval of the mean difference holds zero"
    return f'"Keeping robustness compared to {peer}" {claim}: {averaged}; STT is {per_corruption}.'


def robustness_markdown(runs: list[dict], dataset: str, peers: tuple[str, ...] = PEERS) -> str:
    rows = robustness_rows(runs, dataset, peers)
    def acc(values: list[float]) -> str:
        if not values:
            return "-"
        std = 100 * float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return f"{100 * float(np.mean(values)):.2f} ± {std:.2f} ({len(values)})"

    head = "| corruption | stt | " + " | ".join(peers) + " | " + " | ".join(
        f"stt - {p} [95% CI] | p | Holm" for p in peers) + " |"
    lines = [f"#### Robustness on {dataset}: STT vs {', '.join(peers)}", "",
             *(line for p in peers for line in (robustness_verdict(rows, p), "")),
             "Accuracy (%) as mean ± std (seeds); STT minus each peer in points with its 95% Welch interval, "
             "Welch's p and Holm's adjustment over the corruption rows (STT vs each peer under each "
             "corruption); the mean row, the mean over corruptions of each run, is adjusted on its own.", "",
             head, "|---|" + "---:|" * (1 + len(peers) + 3 * len(peers))]
    for row in rows:
        cells = [acc(row[f"{v}_seeds"]) for v in ("stt", *peers)]
        for p in peers:
            cells += [interval_cell(row[f"{p}_ci"]), p_cell(row[f"{p}_p"]), p_cell(row[f"{p}_holm"])]
        name = "mean over corruptions" if row["corruption"] == "mean" else row["corruption"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(out_dir: str | Path) -> dict:
    """runs.csv, summary.csv, results.md (with the robustness tables) and accuracy.png from runs.jsonl;
    returns the summary."""
    out, runs, summary = write_report(out_dir, summarize_runs, markdown)
    robust = [robustness_markdown(runs, d) for d in sorted({r["dataset"] for r in runs})
              if any(r["variant"] == "stt" for r in runs if r["dataset"] == d)]
    with (out / "results.md").open("a") as f:
        f.write("".join(f"\n{table}" for table in robust))
    plot(summary, out / "accuracy.png")
    return dict(runs=len(runs), summary=summary)


def plot(summary: list[dict], path: Path) -> Path:
    from ..plotting import pyplot

    plt = pyplot()

    datasets = sorted({r["dataset"] for r in summary})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = [r for r in summary if r["dataset"] == dataset]
        variant_bars(ax, rows, "acc", f"{dataset}: test accuracy (mean ± std over seeds)", "accuracy (%)")
        low = min(100 * (r["acc"] - r["acc_std"]) for r in rows)
        high = max(100 * (r["acc"] + r["acc_std"]) for r in rows)
        ax.set_xlim(max(0, low - 0.5), min(100, high + 0.5))
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
    return run_and_report(config, run, report, markdown, "results.md, summary.csv, accuracy.png",
                          report_only=args.report_only)
