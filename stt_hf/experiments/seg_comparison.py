"""Where should attention go in a segmentation backbone? One recipe, each module at the same places.

Every run is `stt-hf train-seg --model stt_resnet18` (UperNet over the 224 px-family ResNet-18 trunk: the
ImageNet stem, `small_input: false`, as train-seg's default) on `fashion_scenes`, changing only the seed
and the backbone's attention options (`VARIANTS`): SE, dot-product self-attention and STT inside the
blocks of stages 3-4 (`*_blocks34`) and as one block after the last stage (`*_final`), STT also once after
each stage (`stt_stages`); the plain ResNet; and the capacity controls `res_block_final` /
`res_block_stages`, a plain bottleneck residual block of about STT's parameters and MACs where the
attention would go, so a gain that any extra block gives is not credited to attention.

The seeded runs use one fixed recipe (`RECIPES`, at the 64 px canvas of `SegComparisonConfig`: 3 epochs
over 4,000 scenes at batch 32 = 375 steps, validation each epoch, the best checkpoint scored on 500 test
scenes). The cost runs train each backbone for 10 steps at a larger canvas (224 px) to show how time and
memory grow with resolution; their mIoU says nothing and is kept only in runs.jsonl. What a run costs is in
docs/implementation-notes.md.

Each finished run is appended to `runs.jsonl` with its mIoU, pixel accuracy, params, MACs, time per
training step (train_runtime / global_step, less the validation passes inside training; checkpoint saving
stays in) and the peak RSS of the training process; an interrupted comparison resumes where it stopped
(a run cut off midway starts over).

    python scripts/seg_comparison.py                                  # every variant, 3 seeds, cost runs
    python scripts/seg_comparison.py --variants plain stt_final --seeds 0 --large_canvas 0
    python scripts/seg_comparison.py --report_only                    # tables and plot from runs.jsonl
    python scripts/seg_comparison.py --train_args --hidden_size 32    # extra train-seg flags, last
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .runs import (
    ComparisonRuns,
    check_known,
    cli_command,
    drop_checkpoints,
    p_against,
    p_cell,
    run_and_report,
    run_missing,
    seed_verdict,
    summarize,
    train,
    variant_bars,
    write_report,
)

DATASET = "fashion_scenes"
BLOCKS34 = dict(attn_placement="block", attn_stages=[3, 4])
FINAL = dict(attn_placement="final")
STAGES = dict(attn_placement="stage", attn_stages=[1, 2, 3, 4])

# name -> the backbone's attention options (everything else is the recipe's stt_resnet18). The controls
# add STT's parameters at its places to within a few percent; res_block_stages adds about a third more
# MACs than stt_stages (its 3x3 conv on stage 1's map), still under 1.5% of the trunk's.
VARIANTS: dict[str, dict] = {
    "plain": dict(attn_layer="none"),
    "res_block_final": dict(attn_layer="res_block", **FINAL),
    "res_block_stages": dict(attn_layer="res_block", **STAGES),
    "se_blocks34": dict(attn_layer="se", **BLOCKS34),
    "self_attn_blocks34": dict(attn_layer="self_attn", **BLOCKS34),
    "stt_blocks34": dict(attn_layer="stt", **BLOCKS34),
    "se_final": dict(attn_layer="se", **FINAL),
    "self_attn_final": dict(attn_layer="self_attn", **FINAL),
    "stt_final": dict(attn_layer="stt", **FINAL),
    "stt_stages": dict(attn_layer="stt", **STAGES),
}
# The verdict: each of these STT placements against the plain ResNet and the capacity control.
VERDICT_VARIANTS = ("stt_blocks34", "stt_final")
VERDICT_AGAINST = ("plain", "res_block_final")
DEFAULT_PLACEMENT = "stt_blocks34"  # what the 224 px family uses: each variant's p-value is against it
SEEDED_METRICS = ("mean_iou", "pixel_accuracy", "step_s", "peak_rss_mib")
COST_METRICS = ("step_s", "peak_rss_mib")
# The train-seg flags of each kind of run. The seeded runs: 3 epochs over 4,000 scenes, validation each
# epoch, the best checkpoint scored on 500 test scenes. The cost runs: training steps only, no validation,
# no checkpoints.
RECIPES = {
    "seeded": {"--num_train_epochs": 3, "--scenes_train": 4000, "--scenes_validation": 500,
               "--scenes_test": 500},
    "cost": {"--max_steps": 10, "--scenes_train": 320, "--scenes_validation": 32, "--scenes_test": 32,
             "--eval_strategy": "no", "--save_strategy": "no", "--load_best_model_at_end": "false"},
}


@dataclass
class SegComparisonConfig(ComparisonRuns):
    out_dir: str = "outputs/seg_comparison"
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    model: str = "stt_resnet18"
    model_kwargs: dict = field(default_factory=lambda: {"small_input": False})  # under each variant's
    canvas: int = 64  # of the seeded runs
    large_canvas: int = 224  # of the cost runs, one per variant (0: none)
    cost_seed: int = 0


def run_name(kind: str, variant: str, canvas: int, seed: int) -> str:
    return f"{canvas}px-{variant}-" + (f"seed{seed}" if kind == "seeded" else "cost")


def backbone_kwargs(config: SegComparisonConfig, variant: str) -> dict:
    """The recipe's backbone options, any `--model_kwargs` of train_args, then the variant's."""
    args = config.train_args
    given = json.loads(args[args.index("--model_kwargs") + 1]) if "--model_kwargs" in args else {}
    return {**config.model_kwargs, **given, **VARIANTS[variant]}


def train_command(config: SegComparisonConfig, kind: str, variant: str, canvas: int, seed: int) -> list[str]:
    """`stt-hf train-seg` with the recipe of `kind` ("seeded" or "cost"); train_args come last."""
    out = Path(config.out_dir) / "runs" / run_name(kind, variant, canvas, seed)
    recipe = [str(part) for flag in RECIPES[kind].items() for part in flag]
    extra = list(config.train_args)
    if "--model_kwargs" in extra:  # merged into the variant's options by backbone_kwargs
        i = extra.index("--model_kwargs")
        del extra[i:i + 2]
    return cli_command("train-seg", out, "--model", config.model,
                       "--model_kwargs", json.dumps(backbone_kwargs(config, variant)),
                       "--scenes_canvas", str(canvas), *recipe, "--seed", str(seed), extra=extra)


def validation_seconds(out: Path) -> float:
    """Seconds spent on validation inside training, from the last checkpoint's log (0 if none)."""
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    if not checkpoints:
        return 0.0
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    return float(sum(entry.get("eval_runtime", 0.0) for entry in state["log_history"]))


def run_one(config: SegComparisonConfig, kind: str, variant: str, canvas: int, seed: int) -> dict:
    """Train one run in its own process and measure it; returns its runs.jsonl row."""
    command = train_command(config, kind, variant, canvas, seed)
    trained = train(command, Path(config.out_dir) / "logs" / f"{run_name(kind, variant, canvas, seed)}.log")
    results = trained.results
    train_s = results["train"]["train_runtime"]
    steps = results["global_step"]
    step_s = (train_s - validation_seconds(trained.out)) / max(steps, 1)
    drop_checkpoints(trained.out)

    from ..hf.modeling_stt_seg import SttUperNetForSemanticSegmentation
    from ..reporting.profiling import count_macs, count_params

    model = SttUperNetForSemanticSegmentation.from_pretrained(trained.out)
    return dict(kind=kind, variant=variant, dataset=DATASET, canvas=canvas, seed=seed,
                mean_iou=results["metrics"]["mean_iou"], pixel_accuracy=results["metrics"]["pixel_accuracy"],
                params=count_params(model), macs=count_macs(model, model.config.backbone_config.input_size()),
                steps=steps, train_s=round(train_s, 1), step_s=round(step_s, 4),
                peak_rss_mib=round(trained.peak_rss_mib, 1), wall_s=round(trained.wall_s, 1))


def jobs(config: SegComparisonConfig) -> list[tuple]:
    """(kind, variant, canvas, seed) of every run, seed-major (a partial comparison has every variant
    at the same seeds), the cost runs last."""
    todo = [("seeded", v, config.canvas, s) for s in config.seeds for v in config.variants]
    if config.large_canvas:
        todo += [("cost", v, config.large_canvas, config.cost_seed) for v in config.variants]
    return todo


def describe(row: dict) -> str:
    score = f"mIoU {row['mean_iou']:.4f}" if row["kind"] == "seeded" else "cost run"
    return (f"{row['canvas']:4d} px {row['variant']:20s} seed {row['seed']}  {score}  "
            f"{1000 * row['step_s']:.0f} ms/step  peak {row['peak_rss_mib']:.0f} MiB")


def run(config: SegComparisonConfig) -> list[dict]:
    """Every run not yet in runs.jsonl, appended as each finishes; returns all runs."""
    check_known(config.variants, VARIANTS)
    return run_missing(config, ("kind", "variant", "canvas", "seed"), jobs(config), partial(run_one, config),
                       describe, "segmentation comparison", timed_by="kind")


# ------------------------------------------------------------------------------------------ report


def summarize_runs(runs: list[dict]) -> list[dict]:
    """One row per (kind, canvas, variant): mean and seed std of the metrics; cost rows carry no scores.

    Seeded rows also get `p_vs_default`: Welch's t-test p-value of the variant's mIoUs against those of
    DEFAULT_PLACEMENT at the same canvas (None for it, or where a side has fewer than 2 seeds)."""
    rows = []
    for kind, metrics in (("seeded", SEEDED_METRICS), ("cost", COST_METRICS)):
        for canvas in sorted({r["canvas"] for r in runs if r["kind"] == kind}):
            group = [r for r in runs if r["kind"] == kind and r["canvas"] == canvas]
            for row in summarize(group, VARIANTS, metrics=metrics, costs=("params", "macs")):
                if kind == "seeded":
                    row["p_vs_default"] = p_against(group, row["variant"], DEFAULT_PLACEMENT, "mean_iou")
                rows.append({"kind": kind, "canvas": canvas, **row})
    return rows


def _cost_cells(r: dict) -> str:
    return (f"{r['params'] / 1e6:.3f} | {r['macs'] / 1e9:.3f} | {1000 * r['step_s']:.0f} | "
            f"{r['peak_rss_mib']:.0f}")


def markdown(summary: list[dict]) -> str:
    lines = []
    seeded = [r for r in summary if r["kind"] == "seeded"]
    for canvas in sorted({r["canvas"] for r in seeded}):
        rows = [r for r in seeded if r["canvas"] == canvas]
        names = [r["variant"] for r in rows]
        targets = [v for v in VERDICT_VARIANTS if v in names] or list(VERDICT_VARIANTS)
        lines += [f"### {DATASET} at {canvas} px (mean ± std over seeds)", ""]
        lines += [seed_verdict(rows, DATASET, v, VERDICT_AGAINST, "mean_iou") for v in targets]
        lines += ["", f"p vs {DEFAULT_PLACEMENT}: Welch's t-test over the seeds' mIoUs (two-sided; - where a "
                  "side has fewer than 2 seeds).",
                  "", f"| variant | seeds | mIoU (%) | p vs {DEFAULT_PLACEMENT} | pixel acc. (%) | "
                  "params (M) | GMACs | ms/step | peak RSS (MiB) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['variant']} | {r['seeds']} | {100 * r['mean_iou']:.2f} ± "
                  f"{100 * r['mean_iou_std']:.2f} | {p_cell(r.get('p_vs_default'))} | "
                  f"{100 * r['pixel_accuracy']:.2f} | {_cost_cells(r)} |"
                  for r in rows]
        lines.append("")
    step_at = {(r["variant"], r["canvas"]): r["step_s"] for r in seeded}
    small = min((r["canvas"] for r in seeded), default=None)
    for canvas in sorted({r["canvas"] for r in summary if r["kind"] == "cost"}):
        rows = [r for r in summary if r["kind"] == "cost" and r["canvas"] == canvas]
        lines += [f"### Cost at {canvas} px (one short run per backbone: cost only, no scores)", "",
                  f"| variant | params (M) | GMACs | ms/step | peak RSS (MiB) | step time vs {small} px |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            base = step_at.get((r["variant"], small))
            ratio = f"{r['step_s'] / base:.1f}x" if base else "-"
            lines.append(f"| {r['variant']} | {_cost_cells(r)} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: list[dict], path: Path) -> Path:
    """Mean IoU of the seeded runs, one panel per canvas, with the seed std as error bars."""
    from ..plotting import pyplot

    plt = pyplot()

    seeded = [r for r in summary if r["kind"] == "seeded"]
    canvases = sorted({r["canvas"] for r in seeded})
    fig, axes = plt.subplots(1, max(1, len(canvases)), figsize=(6 * max(1, len(canvases)), 4.5),
                             squeeze=False)
    for ax, canvas in zip(axes[0], canvases, strict=False):
        rows = [r for r in seeded if r["canvas"] == canvas]
        variant_bars(ax, rows, "mean_iou", f"{DATASET} at {canvas} px: test mIoU (mean ± std over seeds)",
                     "mIoU (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(out_dir: str | Path) -> dict:
    """runs.csv, summary.csv, results.md and miou.png from runs.jsonl; returns the summary."""
    out, runs, summary = write_report(out_dir, summarize_runs, markdown)
    plot(summary, out / "miou.png")
    return dict(runs=len(runs), summary=summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default=SegComparisonConfig.out_dir)
    parser.add_argument("--variants", nargs="+", help=f"subset of {list(VARIANTS)}")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--canvas", type=int,
                        help=f"canvas of the seeded runs ({SegComparisonConfig.canvas})")
    parser.add_argument("--large_canvas", type=int,
                        help=f"canvas of the cost runs ({SegComparisonConfig.large_canvas}; 0: none)")
    parser.add_argument("--train_args", nargs=argparse.REMAINDER, default=[],
                        help="extra stt-hf train-seg flags for every run (last on the line)")
    parser.add_argument("--report_only", action="store_true", help="only rebuild the tables and plot")
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("variants", "seeds", "canvas", "large_canvas")
                 if getattr(args, k) is not None}
    config = SegComparisonConfig(out_dir=args.out_dir, train_args=args.train_args, **overrides)
    return run_and_report(config, run, report, markdown, "results.md, summary.csv, runs.csv, miou.png",
                          report_only=args.report_only)
