"""One captioning recipe, six encoders, several seeds: which attention should the captioner's encoder use?

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

    python scripts/caption_comparison.py                         # 6 encoders x 3 seeds on fashion_scenes
    python scripts/caption_comparison.py --encoders stt plain --seeds 0 1
    python scripts/caption_comparison.py --dataset tuxpaint --out_dir outputs/caption_comparison_tux
    python scripts/caption_comparison.py -- --num_train_epochs 5   # anything after -- goes to train-caption
    python scripts/caption_comparison.py --report_only           # tables and grid from runs.jsonl
    python scripts/caption_comparison.py --rescore 0             # decode the saved runs, no n-gram limit

`--rescore N` decodes every finished run's saved captioner again on the test split with
`no_repeat_ngram_size=N` (`stt-hf eval-caption`, one process per run, resumable in `rescored.jsonl`), and
the report adds a table of those scores: the same models, compared under another decoding setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from .runs import (
    ComparisonRuns,
    check_known,
    drop_checkpoints,
    p_against,
    p_cell,
    read_runs,
    run_logged,
    run_missing,
    seed_verdict,
    summarize,
    train,
    write_csv,
    write_report,
)

# name -> encoder options set on top of train-caption's `encoder_kwargs` (everything else is the recipe's).
ENCODERS: dict[str, dict] = {
    "stt": dict(attn_layer="stt", stt_modes="chw"),
    "plain": dict(attn_layer="none"),
    "self_attn": dict(attn_layer="self_attn"),
    "axial": dict(attn_layer="axial"),
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
class CaptionComparisonConfig(ComparisonRuns):
    out_dir: str = "outputs/caption_comparison"
    encoders: list[str] = field(default_factory=lambda: list(ENCODERS))
    dataset: str = "fashion_scenes"


def run_name(encoder: str, seed: int) -> str:
    return f"{encoder}-seed{seed}"


def run_dir(config: CaptionComparisonConfig, encoder: str, seed: int) -> Path:
    """Where a run's captioner is saved (train-caption's --output_dir)."""
    return Path(config.out_dir) / "runs" / run_name(encoder, seed)


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
    out = run_dir(config, encoder, seed)
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
    trained = train(command, Path(config.out_dir) / "logs" / f"{run_name(encoder, seed)}.log")
    drop_checkpoints(trained.out)
    results = trained.results

    from ..hf.modeling_stt_captioner import SttCaptioner
    from ..reporting.profiling import count_params

    model = SttCaptioner.from_pretrained(trained.out)
    scores = {k: results["metrics"][k] for k in METRICS if k in results["metrics"]}
    return dict(encoder=encoder, seed=seed, dataset=config.dataset, **scores,
                encoder_params=count_params(model.encoder), params=count_params(model),
                train_s=round(results["train"]["train_runtime"], 1), wall_s=round(trained.wall_s, 1),
                data_args=results["data_args"], examples=results["examples"][:EXAMPLES])


def describe(row: dict) -> str:
    metric = primary_metric(row)
    return (f"{row['encoder']:10s} seed {row['seed']}  {metric} {row[metric]:.4f}  cider {row['cider']:.4f}  "
            f"train {row['train_s']:.0f}s")


def run(config: CaptionComparisonConfig) -> list[dict]:
    """Every (encoder, seed) on the dataset not yet in runs.jsonl, appended as each finishes."""
    check_known(config.encoders, ENCODERS, "encoders")
    own = [flag for flag in OWN_FLAGS if flag in config.train_args]
    if own:
        raise ValueError(f"{own} among the train-caption arguments: set them with the comparison's "
                         f"{[OWN_FLAGS[f] for f in own]}")
    jobs = [(e, config.dataset, s) for s in config.seeds for e in config.encoders]  # seed-major
    return run_missing(config, ("encoder", "dataset", "seed"), jobs,
                       lambda encoder, _, seed: run_one(config, encoder, seed), describe,
                       f"caption comparison on {config.dataset}")


# ------------------------------------------------------------------------------------ rescoring


def rescore_command(config: CaptionComparisonConfig, row: dict, ngram: int) -> list[str]:
    """eval-caption of a finished run's captioner on the test split it was scored on, with
    no_repeat_ngram_size=`ngram`; the scores go to eval_test_ngram<N>.json in the run's folder."""
    folder, data = run_dir(config, row["encoder"], row["seed"]), row["data_args"]
    command = [sys.executable, "-m", "stt_hf.cli", "eval-caption", "--model", str(folder),
               "--dataset", row["dataset"], "--split", "test", "--seed", str(row["seed"]),
               "--image_column", data["image_column"], "--caption_column", data["caption_column"],
               "--no_repeat_ngram_size", str(ngram), "--output", str(folder / f"eval_test_ngram{ngram}.json")]
    if data["max_eval_samples"] is not None:
        command += ["--max_eval_samples", str(data["max_eval_samples"])]
    return command + (["--keep_symbols"] if data["keep_symbols"] else [])


def rescore_one(config: CaptionComparisonConfig, row: dict, ngram: int) -> dict:
    """Decode one saved run again; its rescored.jsonl row (the run's sizes and train time kept)."""
    folder = run_dir(config, row["encoder"], row["seed"])
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} holds no saved captioner (model.safetensors) to rescore: "
                                "runs.jsonl lists the run, but its folder is gone (a fresh checkout keeps "
                                "only the rows)")
    command = rescore_command(config, row, ngram)
    log = Path(config.out_dir) / "logs" / f"{run_name(row['encoder'], row['seed'])}-ngram{ngram}.log"
    run_logged(command, log)
    result = json.loads(Path(command[command.index("--output") + 1]).read_text())
    scores = {k: result["metrics"][k] for k in METRICS if k in result["metrics"]}
    return dict(encoder=row["encoder"], seed=row["seed"], dataset=row["dataset"], no_repeat_ngram_size=ngram,
                **scores, **{k: row[k] for k in ("encoder_params", "params", "train_s")},
                examples=result["examples"][:EXAMPLES])


def rescore(config: CaptionComparisonConfig, ngram: int) -> list[dict]:
    """Every finished run of the config's encoders, seeds and dataset decoded with no_repeat_ngram_size=
    `ngram`, unless rescored.jsonl has it already; returns rescored.jsonl's rows."""
    from ..tasks.evaluation_caption import check_no_repeat_ngram_size

    check_no_repeat_ngram_size(ngram)
    check_known(config.encoders, ENCODERS, "encoders")
    done = {(r["encoder"], r["seed"]): r for r in read_runs(Path(config.out_dir) / "runs.jsonl")
            if r["dataset"] == config.dataset}
    jobs = [(e, config.dataset, s, ngram) for s in config.seeds for e in config.encoders if (e, s) in done]
    return run_missing(config, ("encoder", "dataset", "seed", "no_repeat_ngram_size"), jobs,
                       lambda e, _, s, n: rescore_one(config, done[(e, s)], n), describe,
                       f"rescoring with no_repeat_ngram_size={ngram} on {config.dataset}",
                       runs_file="rescored.jsonl", config_file="rescore_config.json")


# --------------------------------------------------------------------------------------- report


def summarize_runs(runs: list[dict]) -> list[dict]:
    """Mean and sample std over seeds of every score, per (dataset, encoder), in ENCODERS order, and
    `p_vs_stt`: Welch's t-test p-value of each encoder's primary metric against STT's (None for STT)."""
    summary = summarize(runs, ENCODERS, key="encoder", metrics=METRICS, costs=("encoder_params", "params"))
    for row in summary:
        same_dataset = [r for r in runs if r["dataset"] == row["dataset"]]
        row["p_vs_stt"] = p_against(same_dataset, row["encoder"], "stt", primary_metric(row), key="encoder")
    return summary


def verdict(summary: list[dict], dataset: str, encoder: str = "stt",
            against: tuple[str, ...] = ("plain", "self_attn")) -> str:
    """Whether `encoder` beats each of `against` by more than the larger seed std of the primary metric."""
    row = next((r for r in summary if r["dataset"] == dataset and r["encoder"] == encoder), {})
    return seed_verdict(summary, dataset, encoder, against, primary_metric(row), key="encoder", points=False,
                        say_metric=True)


def markdown(summary: list[dict]) -> str:
    lines = []
    for dataset in sorted({r["dataset"] for r in summary}):
        rows = [r for r in summary if r["dataset"] == dataset]
        metrics = [m for m in METRICS if all(m in r for r in rows)]
        primary = primary_metric(rows[0])
        lines += [f"### {dataset}", "", verdict(summary, dataset), "",
                  "Test-split scores, mean ± std over seeds; train time is per run; p: Welch's t-test of "
                  f"{primary} against stt over the seeds (- where there are fewer than 2 of either).", "",
                  "| encoder | seeds | " + " | ".join(metrics)
                  + f" | p vs stt ({primary}) | encoder params (M) | params (M) | train time (s) |",
                  "|---|---:|" + "---:|" * (len(metrics) + 4)]
        for r in rows:
            lines.append(f"| {r['encoder']} | {r['seeds']} | "
                         + " | ".join(f"{r[m]:.4f} ± " + (f"{r[f'{m}_std']:.4f}" if r["seeds"] > 1 else "–")
                                      for m in metrics)  # one run has no spread
                         + f" | {p_cell(r.get('p_vs_stt'))} | {r['encoder_params'] / 1e6:.3f} "
                         f"| {r['params'] / 1e6:.3f} | {r['train_s']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def report(out_dir: str | Path) -> dict:
    """runs.csv, summary.csv, results.md and the example grid(s) from runs.jsonl; returns the summary."""
    out, runs, summary = write_report(out_dir, summarize_runs, markdown, not_in_csv=("data_args", "examples"))
    rescored = read_runs(out / "rescored.jsonl")
    for ngram in sorted({r["no_repeat_ngram_size"] for r in rescored}):
        rows = [r for r in rescored if r["no_repeat_ngram_size"] == ngram]
        again = summarize_runs(rows)
        write_csv(out / f"summary_ngram{ngram}.csv", again)
        with (out / "results.md").open("a") as f:
            f.write(f"\n## The same captioners decoded with no_repeat_ngram_size={ngram} "
                    f"(`--rescore {ngram}`)\n\n" + markdown(again))
    datasets = sorted({r["dataset"] for r in runs})
    grids = [grid(runs, d, out / ("examples.png" if len(datasets) == 1 else f"examples-{d}.png"))
             for d in datasets]
    return dict(runs=len(runs), summary=summary, grids=grids)


def grid(runs: list[dict], dataset: str, path: Path, count: int = 8) -> Path:
    """Test images with the reference and each encoder's caption, from each encoder's lowest-seed run
    (the test split is the same for every encoder at one seed)."""
    from ..plotting import pyplot

    plt = pyplot()

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
    parser.add_argument("--rescore", type=int, metavar="N", default=None,
                        help="instead of training: decode every finished run again with "
                             "no_repeat_ngram_size=N (0: no limit), resumable, and report both")
    parser.add_argument("train_args", nargs="*", help="after --: arguments for stt-hf train-caption")
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("encoders", "seeds") if getattr(args, k)}
    config = CaptionComparisonConfig(out_dir=args.out_dir, dataset=args.dataset, train_args=args.train_args,
                                     **overrides)
    if args.rescore is not None:
        if args.rescore < 0:
            parser.error(f"--rescore must be 0 (no n-gram limit) or a positive n-gram size, "
                         f"got {args.rescore}")
        rescore(config, args.rescore)
    elif not args.report_only:
        run(config)
    result = report(config.out_dir)
    print(f"\n{result['runs']} runs -> {config.out_dir}: results.md, summary.csv, "
          + ", ".join(p.name for p in result["grids"]) + "\n")
    print(markdown(result["summary"]))
    return 0
