"""The main job's recipe on a second family: a plugged ConvNeXt, plain vs STT vs the capacity control.

Each run is exactly `stt-hf train` with its defaults (the main job: Fashion-MNIST at 28 px), with the model
`stt_convnext_s` (a narrow ConvNeXt adapted to 28-32 px, `stt_hf.models.stt_convnext`) instead of
`stt_resnet10_s`, changing only the seed and the module added after its last stage (`attn_layer`):
`none` (the plain ConvNeXt), `stt`, or `res_block` (a plain bottleneck block of about STT's size at the
same place). The runs, the robustness scoring and the report are those of `main_comparison`, so the
tables read the same; an interrupted comparison resumes where it stopped.

    python scripts/plugin_comparison.py                       # 3 variants x 3 seeds on Fashion-MNIST
    python scripts/plugin_comparison.py --report_only         # tables and plot from runs.jsonl
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .main_comparison import VARIANTS as MAIN_VARIANTS
from .main_comparison import markdown, measure, plot, run_name, summarize_runs
from .runs import ComparisonRuns, check_known, cli_command, drop_checkpoints, run_missing, train, write_report

MODEL = "stt_convnext_s"
VARIANTS = {name: MAIN_VARIANTS[name] for name in ("plain", "res_block", "stt")}


@dataclass
class PluginComparisonConfig(ComparisonRuns):
    out_dir: str = "outputs/plugin_comparison"
    model: str = MODEL
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    datasets: list[str] = field(default_factory=lambda: ["fashion_mnist"])


def train_command(config: PluginComparisonConfig, variant: str, dataset: str, seed: int) -> list[str]:
    """The main job's command line with only the model, dataset, seed, attention and output folder set."""
    out = Path(config.out_dir) / "runs" / run_name(variant, dataset, seed)
    return cli_command("train", out, "--model", config.model, "--dataset", dataset, "--seed", str(seed),
                       "--model_kwargs", json.dumps(VARIANTS[variant]), extra=config.train_args)


def run_one(config: PluginComparisonConfig, variant: str, dataset: str, seed: int) -> dict:
    """Train one run in its own process, then score it as the main comparison does; returns the row."""
    command = train_command(config, variant, dataset, seed)
    trained = train(command, Path(config.out_dir) / "logs" / f"{run_name(variant, dataset, seed)}.log")
    drop_checkpoints(trained.out)
    return dict(variant=variant, dataset=dataset, seed=seed, model=config.model, **measure(trained, dataset))


def describe(row: dict) -> str:
    return (
        f"{row['dataset']:13s} {row['variant']:10s} seed {row['seed']}  acc {row['acc']:.4f}  "
        f"train {row['train_s']:.0f}s"
    )


def run(config: PluginComparisonConfig) -> list[dict]:
    """Every (variant, dataset, seed) not yet in runs.jsonl, appended as each finishes (seed-major)."""
    check_known(config.variants, VARIANTS)
    jobs = [(v, d, s) for d in config.datasets for s in config.seeds for v in config.variants]
    return run_missing(
        config, ("variant", "dataset", "seed"), jobs, partial(run_one, config), describe, "plugin comparison"
    )


def report(out_dir: str | Path) -> dict:
    """runs.csv, summary.csv, results.md and accuracy.png from runs.jsonl; returns the summary."""
    out, runs, summary = write_report(out_dir, summarize_runs, markdown)
    plot(summary, out / "accuracy.png")
    return dict(runs=len(runs), summary=summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out_dir", default=PluginComparisonConfig.out_dir)
    parser.add_argument("--model", default=MODEL, help="a registered plugged model (stt_convnext_s, ...)")
    parser.add_argument("--variants", nargs="+", help=f"subset of {list(VARIANTS)}")
    parser.add_argument("--datasets", nargs="+", help="subset of fashion_mnist, mnist_5k")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument(
        "--train_args",
        nargs=argparse.REMAINDER,
        default=[],
        help="extra stt-hf train flags for every run (last on the line)",
    )
    parser.add_argument("--report_only", action="store_true", help="only rebuild the tables and plot")
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("variants", "datasets", "seeds") if getattr(args, k)}
    config = PluginComparisonConfig(
        out_dir=args.out_dir, model=args.model, train_args=args.train_args, **overrides
    )
    if not args.report_only:
        run(config)
    result = report(config.out_dir)
    print(f"\n{result['runs']} runs -> {config.out_dir}: results.md, summary.csv, accuracy.png\n")
    print(markdown(result["summary"]))
    return 0
