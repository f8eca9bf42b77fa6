"""What the resumable comparisons share: one training process per run, runs.jsonl, the summary, the verdict.

A comparison is a list of jobs (a tuple of the fields that name a run's row, e.g. (variant, dataset,
seed)), each trained by an `stt-hf` command in its own process and appended to `runs.jsonl` as it
finishes, so an interrupted comparison resumes where it stopped; the report reads `runs.jsonl` back.

    run_missing(config, ("variant", "dataset", "seed"), jobs, train_one, describe, "main comparison")
    trained = train(command, log)             # the run's folder, metrics.json, wall time, peak RSS
    out, runs, summary = write_report(out_dir, summarize_runs, markdown)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------- one run


@dataclass
class ComparisonRuns:
    """What every comparison's config holds besides what it compares: its output folder, the seeds, and
    extra flags for every run's command (last on its line, so they win)."""

    out_dir: str = "outputs/comparison"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    train_args: list[str] = field(default_factory=list)


@dataclass
class Trained:
    """What one finished training process left behind."""

    out: Path  # the run's folder (its --output_dir)
    results: dict  # its metrics.json
    wall_s: float  # wall time of the process
    peak_rss_mib: float  # the process's own peak resident memory


def run_logged(command: list[str], log: Path) -> float:
    """Run `command` to its end with its output in `log`; return its peak RSS in MiB (Linux).

    A failure raises RuntimeError naming the command and the log; an interrupt kills the process."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        child = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(child.pid, 0)  # the child's own rusage, not all children's
        except BaseException:
            child.kill()
            child.wait()
            raise
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {child.returncode}; see {log}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def train(command: list[str], log: Path) -> Trained:
    """Run a training command (one with `--output_dir`) from an empty folder: a run interrupted earlier
    starts over. Its checkpoint-* folders stay until `drop_checkpoints`."""
    out = Path(command[command.index("--output_dir") + 1])
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    peak_mib = run_logged(command, log)
    wall_s = time.perf_counter() - started
    return Trained(out, json.loads((out / "metrics.json").read_text()), wall_s, peak_mib)


def cli_command(subcommand: str, out: Path, *args: str, extra: Sequence[str] = ()) -> list[str]:
    """One run of a comparison as its own process: `python -m stt_hf.cli SUBCOMMAND ARGS --output_dir OUT
    --disable_tqdm true EXTRA`, the extra flags last so that they win."""
    return [sys.executable, "-m", "stt_hf.cli", subcommand, *args, "--output_dir", str(out),
            "--disable_tqdm", "true", *extra]


def drop_checkpoints(out: Path) -> None:
    """Delete the checkpoint-* folders of a finished run: its folder holds the best weights."""
    for checkpoint in out.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)


# ------------------------------------------------------------------------------------ runs.jsonl


def read_runs(path: Path) -> list[dict]:
    """The rows of a runs.jsonl (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_row(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def check_known(names: Iterable[str], known: Iterable[str], what: str = "variants") -> None:
    """ValueError naming the unknown `names` and the known ones."""
    known = list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {known}")


def run_missing(config, key: Sequence[str], jobs: list[tuple], train_one: Callable[..., dict],
                describe: Callable[[dict], str], title: str, timed_by: str | None = None,
                runs_file: str = "runs.jsonl", config_file: str = "config.json") -> list[dict]:
    """Train every job that `runs_file` in `config.out_dir` holds no row for; return all its rows.

    A job is the values of the row fields `key`, in that order; the caller lists them seed-major, so a
    partial comparison has every variant at the same number of seeds. `train_one(*job)` returns the row,
    appended as soon as it is back; `describe(row)` is its progress line. The ETA reads each remaining
    job as the mean time of the finished ones with the same `timed_by` field (all of them if none yet).
    `config` (a dataclass) is written to `config_file` first."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / config_file).write_text(json.dumps(asdict(config), indent=2) + "\n")
    runs_path = out / runs_file
    done = {tuple(r[k] for k in key) for r in read_runs(runs_path)}
    todo = [job for job in jobs if tuple(job) not in done]
    print(f"{title}: {len(done)} runs done, {len(todo)} to go -> {runs_path}", flush=True)

    def group(job: tuple):
        return job[key.index(timed_by)] if timed_by else None

    took: dict = {}
    for i, job in enumerate(todo, 1):
        started = time.perf_counter()
        row = train_one(*job)
        append_row(runs_path, row)
        took.setdefault(group(job), []).append(time.perf_counter() - started)
        everything = [s for t in took.values() for s in t]
        eta = sum(np.mean(took.get(group(j)) or everything) for j in todo[i:])
        print(f"[{i}/{len(todo)}] {describe(row)}  (eta {eta / 60:.0f} min)", flush=True)
    return read_runs(runs_path)


# ---------------------------------------------------------------------------------------- report


def summarize(runs: list[dict], variants: Iterable[str], *, key: str = "variant", metrics: Sequence[str],
              costs: tuple[str, ...] = ("params", "macs")) -> list[dict]:
    """Mean and sample std over seeds of each of `metrics` for each (dataset, `key`), in the order of
    `variants`; `costs` (the same at every seed) from the first run. A metric not in every run of a group
    is left out of its row."""
    order = {v: i for i, v in enumerate(variants)}
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r[key]), []).append(r)
    rows = []
    for (dataset, variant), group in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        row = dict(dataset=dataset, **{key: variant}, seeds=len(group), **{c: group[0][c] for c in costs},
                   train_s=float(np.mean([r["train_s"] for r in group])))
        for metric in metrics:
            if not all(metric in r for r in group):
                continue
            values = np.array([r[metric] for r in group])
            row[metric] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) between two sets of seeds.

    None with fewer than 2 values on a side or no spread at all (the test is undefined there)."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import ttest_ind

    p = float(ttest_ind(list(a), list(b), equal_var=False).pvalue)
    return None if np.isnan(p) else p


def p_against(runs: list[dict], variant: str, reference: str, metric: str,
              key: str = "variant") -> float | None:
    """welch_p of `variant`'s `metric` over its runs against `reference`'s (None for the reference itself).

    `runs` holds one comparable group (one dataset, one canvas); `key` is the row field naming the variant."""
    if variant == reference:
        return None
    seeds = {v: [r[metric] for r in runs if r[key] == v] for v in (variant, reference)}
    return welch_p(seeds[variant], seeds[reference])


def holm(pvalues: dict[str, float | None]) -> dict[str, float | None]:
    """Holm's step-down adjustment of a family of p-values (None, a test that could not run, stays None).

    The m p-values that exist are sorted, p_(1) <= ... <= p_(m); the i-th becomes max over j <= i of
    min(1, (m - j + 1) p_(j)). Rejecting where the adjusted value is below alpha keeps the chance of any
    false rejection in the family below alpha, whatever the tests' dependence."""
    ranked = sorted((p, name) for name, p in pvalues.items() if p is not None)
    adjusted, running = {}, 0.0
    for i, (p, name) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - i) * p))
        adjusted[name] = running
    return {name: adjusted.get(name) for name in pvalues}


def welch_interval(a: Sequence[float], b: Sequence[float],
                   level: float = 0.95) -> tuple[float, float, float] | None:
    """mean(a) - mean(b) and its `level` confidence interval, (difference, low, high), from Welch's t:
    standard error sqrt(s_a^2 / n_a + s_b^2 / n_b) on the Welch-Satterthwaite degrees of freedom.

    None with fewer than 2 values on a side or no spread at all."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import t

    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    if va + vb == 0:
        return None
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    diff = float(np.mean(a) - np.mean(b))
    half = float(t.ppf(0.5 + level / 2, df) * np.sqrt(va + vb))
    return diff, diff - half, diff + half


def interval_cell(interval: tuple[float, float, float] | None, scale: float = 100, digits: int = 2) -> str:
    """A difference and its interval for a markdown table, e.g. +0.30 [-0.01, +0.61] (- where none)."""
    if interval is None:
        return "-"
    diff, low, high = (scale * v for v in interval)
    return f"{diff:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def p_cell(p: float | None) -> str:
    """A p-value for a markdown table: 3 decimals, or - where there is none."""
    return "-" if p is None else f"{p:.3f}"


def seed_verdict(summary: list[dict], dataset: str, name: str, against: Sequence[str], metric: str, *,
                 key: str = "variant", points: bool = True, say_metric: bool = False) -> str:
    """One sentence: is `name` ahead of, behind or within the seed spread of each of `against` on `metric`?

    Ahead or behind means by more than the larger of the two seed stds, and needs 2+ seeds of each (one run
    has no spread). `points`: the metric is a fraction, read in percentage points (else as it is, to 4
    decimals); `say_metric`: the sentence names the metric."""
    by = {r[key]: r for r in summary if r["dataset"] == dataset}
    if name not in by:
        return f"{dataset}: no {name} runs yet."
    scale, digits, unit = (100, 2, " points") if points else (1, 4, "")
    parts = []
    for other in against:
        if other not in by:
            parts.append(f"not comparable with {other} (no {other} runs yet)")
            continue
        diff = scale * (by[name][metric] - by[other][metric])
        seeds = by[name]["seeds"], by[other]["seeds"]
        if min(seeds) < 2:
            parts.append(f"not yet comparable with {other} ({diff:+.{digits}f}{unit}; a verdict needs 2+ "
                         f"seeds of each, there are {seeds[0]} and {seeds[1]})")
            continue
        spread = scale * max(by[name][f"{metric}_std"], by[other][f"{metric}_std"])
        word = "ahead of" if diff > spread else "behind" if diff < -spread else "within the seed spread of"
        parts.append(f"{word} {other} ({diff:+.{digits}f}{unit}, spread {spread:.{digits}f})")
    seeds = min(by[v]["seeds"] for v in (name, *against) if v in by)
    heading = f"{dataset} ({seeds} seed(s))" + (f", by test {metric}" if say_metric else "")
    return f"{heading}: {name} is " + "; ".join(parts) + "."


def variant_bars(ax, rows: list[dict], metric: str, title: str, xlabel: str) -> None:
    """One bar per summary row: `metric` in %, the seed std as error bars; STT orange, the plain network
    and the capacity controls gray, the other modules blue."""
    colors = ["tab:orange" if r["variant"].startswith("stt") else
              "tab:gray" if r["variant"].startswith(("plain", "res_block")) else "tab:blue" for r in rows]
    ax.barh([r["variant"] for r in rows], [100 * r[metric] for r in rows],
            xerr=[100 * r[f"{metric}_std"] for r in rows], color=colors)
    ax.invert_yaxis()
    ax.set(title=title, xlabel=xlabel)


def write_csv(path: Path, rows: list[dict]) -> None:
    """rows as a CSV whose columns are every key of any row, first seen first."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)


def write_csvs(out: Path, runs: list[dict], summary: list[dict]) -> None:
    """runs.csv (one row per run) and summary.csv (one row per dataset and variant) in `out`."""
    write_csv(out / "runs.csv", runs)
    write_csv(out / "summary.csv", summary)


def write_report(out_dir: str | Path, summarize_runs: Callable[[list[dict]], list[dict]],
                 markdown: Callable[[list[dict]], str], *, not_in_csv: tuple[str, ...] = (),
                 what: str = "comparison") -> tuple[Path, list[dict], list[dict]]:
    """runs.csv, summary.csv and results.md from runs.jsonl; returns (folder, runs, summary) for the plots.

    `not_in_csv`: row fields too big for runs.csv (they stay in runs.jsonl)."""
    out = Path(out_dir)
    runs = read_runs(out / "runs.jsonl")
    if not runs:
        raise FileNotFoundError(f"no runs in {out / 'runs.jsonl'}: run the {what} first")
    summary = summarize_runs(runs)
    write_csvs(out, [{k: v for k, v in r.items() if k not in not_in_csv} for r in runs], summary)
    (out / "results.md").write_text(markdown(summary))
    return out, runs, summary


def run_and_report(config, run: Callable, report: Callable[[str], dict], markdown: Callable[[list], str],
                   outputs: str, *, report_only: bool = False) -> int:
    """A comparison's command: run what is left (unless `report_only`), rebuild its report, print where
    the `outputs` went and the summary table; the exit code."""
    if not report_only:
        run(config)
    result = report(config.out_dir)
    print(f"\n{result['runs']} runs -> {config.out_dir}: {outputs}\n")
    print(markdown(result["summary"]))
    return 0
