"""What a run writes: the CSVs, results.json, results.md (Markdown tables) and the plots."""

from __future__ import annotations

import csv
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from .plots import PLOTS, plot_models, plot_scaling, plotted
from .spec import (
    BLOCK_COLUMNS,
    BLOCK_PARTS,
    COST_COLUMNS,
    COST_REDUCTION,
    FIT_COLUMNS,
    INFER_MODES,
    MAX_BLOCK_OPS,
    MODEL_COLUMNS,
    STT_REFERENCE,
    TARGET_COLUMNS,
)


def fmt(value, spec: str, suffix: str = "", missing: str = "n/a") -> str:
    return missing if value is None else f"{value:{spec}}{suffix}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
    """Rows as CSV with exactly `columns` (None written empty); a row with another key is an error."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        writer.writerows(rows)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"CPU: {model}, {os.cpu_count()} cores"


def device_label(device: str, precision: str) -> str:
    return f"{device.upper()}, {'bf16 autocast' if precision == 'bf16' else 'float32'}"


def render_blocks(rows: list[dict]) -> list[str]:
    table = [[str(r["channels"]), f"{r['resolution']}x{r['resolution']}", str(r["batch"]), r["module"],
              f"{r['params'] / 1e3:.1f}k", f"{r['gflops']:.3f}", fmt(r["fwd_ms"], ".2f"),
              fmt(r["fwd_bwd_ms"], ".2f"), fmt(r["fwd_img_s"], ".3g"), fmt(r["peak_fwd_mb"], ".1f"),
              fmt(r["peak_fwd_bwd_mb"], ".1f"), fmt(r["rss_mb"], ".0f"), str(r["repeats"]),
              fmt(r["fwd_vs_stt"], ".2f", "x"), fmt(r["peak_fwd_vs_stt"], ".2f", "x"),
              fmt(r["rss_vs_stt"], ".2f", "x"), "" if r["status"] == "ok" else f"{r['status']}: {r['note']}"]
             for r in rows]
    return [f"Ratios /STT are the row's value over {STT_REFERENCE}'s at the same C, HxW and B.", "",
            markdown_table(["C", "HxW", "B", "module", "params", "GFLOPs fwd", "fwd ms", "fwd+bwd ms",
                            "fwd img/s", "peak fwd MB", "peak fwd+bwd MB", "RSS MB", "n", "fwd /STT",
                            "peak /STT", "RSS /STT", "note"], table)]


def render_scaling(fits: list[dict]) -> list[str]:
    table = [[f["module"], str(f["channels"]), str(f["batch"]), f"{f['n_min']}..{f['n_max']}",
              str(f["points"]), fmt(f["k_fwd"], ".2f"), fmt(f["k_fwd_bwd"], ".2f"), fmt(f["k_flops"], ".2f"),
              fmt(f["k_peak_mem"], ".2f")] for f in fits]
    return ["k: fitted exponent of latency, FLOPs or peak memory ~ N^k over the N measured, per (C, B) "
            "series; the targets use each module's series with the largest C x B (at least 3 sizes).", "",
            markdown_table(["module", "C", "B", "N", "points", "k fwd", "k fwd+bwd", "k FLOPs", "k peak mem"],
                           table)]


def render_cost(rows: list[dict]) -> list[str]:
    table = [[r["config"], str(r["batch"]), f"{r['block_ms']:.2f}", f"{r['convs_ms']:.2f}",
              f"{r['conv_pair_ms']:.2f}", f"{r['trunk_ms']:.2f}", f"{r['block_vs_convs']:.2f}x",
              f"{r['convs_gmacs_s']:.1f}",
              f"{r['trunk_gmacs_s']:.1f}", f"{r['trunk_vs_convs_gmacs']:.2f}x", str(r["block_ops"]),
              " / ".join(f"{r[f'{part}_ms']:.2f}" for part in BLOCK_PARTS)]
             for r in rows]
    return [f"STT (reduction {COST_REDUCTION}, eval) against its two 1x1 convs + BN alone, and the trunk's "
            "1x1 expansion conv at the same place in ResNet-50; convs GMAC/s: the two convs without BN; "
            "block ops: top-level ATen operators per forward, views and empty allocations left out "
            f"(budget {MAX_BLOCK_OPS}); "
            "parts: the block's steps timed one by one (values = first projection, synths = attention maps, "
            "products = mode products, output = projection + BN + residual).", "",
            markdown_table(["C:HxW", "B", "block ms", "convs+BN ms", "convs ms", "trunk conv ms",
                            "block/convs", "convs GMAC/s", "trunk GMAC/s", "trunk/convs GMAC/s", "block ops",
                            "parts ms: values / synths / products / output"], table)]


def interval(row: dict, kind: str) -> str:
    return f" ({row[f'{kind}_speed_ci_low']:.3f}-{row[f'{kind}_speed_ci_high']:.3f})"


def render_models(rows: list[dict]) -> list[str]:
    modes = [m for m in ("fused", "compiled") if any(r[f"{m}_infer_ms"] is not None for r in rows)]
    table = [[r["model"], str(r["img_size"]), f"{r['params'] / 1e6:.2f}M", f"{r['gmacs']:.2f}",
              f"{r['infer_ms']:.1f}", f"{r['infer_img_s']:.2f}", f"{r['train_step_ms']:.1f}",
              f"{r['train_img_s']:.2f}", f"{r['peak_train_mb']:.0f}", f"{r['params_vs_ref']:.3f}x",
              f"{r['gmacs_vs_ref']:.3f}x", f"{r['infer_speed_vs_ref']:.3f}x" + interval(r, "infer"),
              f"{r['train_speed_vs_ref']:.3f}x" + interval(r, "train")]
             + [cell for m in modes for cell in (fmt(r[f"{m}_infer_img_s"], ".2f"),
                                                 fmt(r[f"{m}_speed_vs_ref"], ".3f", "x"))]
             + [r["note"]] for r in rows]
    header = ["model", "px", "params", "GMACs/img", "infer ms", "infer img/s", "train step ms", "train img/s",
              "peak train MB", "params", "GMACs", "infer speed", "train speed"]
    header += [h for m in modes for h in (f"{m} img/s", f"{m} speed")]
    out = [f"Ratios are model / {rows[0]['reference']} (speed: images per second, higher is faster; the "
           "median over rounds of the paired ratio, with its 95% bootstrap interval).", "",
           markdown_table(header + ["note"], table)]
    versus = [r for r in rows if r["infer_speed_vs_control"] is not None]
    if versus:
        kinds = ["infer", *modes]
        table = [[r["model"], *(fmt(r[f"{k}_speed_vs_control"], ".3f", "x")
                                + (f" ({r[f'{k}_speed_vs_control_ci_low']:.3f}-"
                                   f"{r[f'{k}_speed_vs_control_ci_high']:.3f})"
                                   if r[f"{k}_speed_vs_control"] is not None else "") for k in kinds)]
                 for r in versus]
        out += ["", "Inference speed against the capacity control (a plain block of STT's size at its "
                "places), paired by round:", "",
                markdown_table(["model", *(INFER_MODES[k] for k in kinds)], table)]
    return out


def render_targets(targets: list[dict]) -> list[str]:
    table = [[t["target"], fmt(t["measured"], ".2f", t["unit"]), t["required"],
              fmt(t["margin"], "+.2f", t["unit"]), t["status"], t["where"]] for t in targets]
    return [markdown_table(["target", "measured", "required", "margin", "result", "where"], table)]


def render(meta: dict, sections: list[dict]) -> str:
    """results.md: the run's settings, then per device the blocks, scaling, cost, models and targets."""
    if meta["configs"]:
        grid = f"points C:HxW {', '.join(meta['configs'])}, B {meta['batch_sizes']}"
    else:
        grid = f"C {meta['channels']}, H=W {meta['resolutions']}, B {meta['batch_sizes']}"
    calls = "forward only" if meta["forward_only"] else "forward and forward+backward"
    models = [f"- models: {', '.join(meta['models'])} against {meta['reference']}, random init at "
              f"{meta['img_size']} px, inference batch {meta['infer_batch']}, training step batch "
              f"{meta['train_batch']} (SGD), {meta['model_repeats']} repeats"
              + (f", torch.compile ({meta['compile']})" if meta["compile"] else "")] if meta["models"] else []
    out = ["# STT benchmark", "",
           f"- machine: {meta['machine']}; {meta['threads']} threads; torch {meta['torch']}, "
           f"timm {meta['timm']}, Python {meta['python']}; {meta['date']}",
           f"- command: `{meta['command']}`",
           f"- blocks: {grid}; {calls}; {meta['repeats']} repeats after {meta['warmup']} warm-up (median; "
           f"at least 2 for rows over {meta['row_budget_s']:g} s); memory cap {meta['max_mem_gb']:.3g} GB "
           f"({meta['max_mem_source']})",
           *models,
           "- FLOPs: matmuls and convolutions (FlopCounterMode); peak MB: live tensor bytes in one call "
           "(torch.profiler on CPU, max_memory_allocated on CUDA); RSS MB: the worker's peak resident-set "
           f"growth ({meta['rss_method'] or 'n/a'}); timings on a shared machine are noisy",
           *(f"- note: {note}" for note in meta.get("notes", ())), ""]
    for s in sections:
        label, tag = device_label(s["device"], s["precision"]), s["device"]
        if s["blocks"]:
            out += [f"## Blocks ({label})", "", *render_blocks(s["blocks"]), ""]
        if s["fits"]:
            out += [f"## Scaling with N = H*W ({label})", "", *render_scaling(s["fits"]), ""]
            out += [f"![{title}]({tag}_{name}.png)\n" for name, _, title, _ in PLOTS
                    if plotted(s["blocks"], name)]
        if s["cost"]:
            out += [f"## STT block cost ({label})", "", *render_cost(s["cost"]), ""]
        if s["models"]:
            out += [f"## Models ({label})", "", *render_models(s["models"]), "",
                    f"![models]({tag}_models.png)", ""]
        out += [f"## Targets ({label})", "", *render_targets(s["targets"]), ""]
    return "\n".join(out)


TABLES = (("blocks", BLOCK_COLUMNS), ("fits", FIT_COLUMNS), ("cost", COST_COLUMNS), ("models", MODEL_COLUMNS),
          ("targets", TARGET_COLUMNS))
CSV_NAMES = {"blocks": "blocks.csv", "fits": "exponents.csv", "cost": "cost.csv", "models": "models.csv",
             "targets": "targets.csv"}


def write_outputs(out: Path, meta: dict, sections: list[dict]) -> list[Path]:
    """The CSVs, results.json, results.md and the PNGs; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, columns in TABLES:
        rows = [r for s in sections for r in s[key]]
        if rows:
            write_csv(out / CSV_NAMES[key], rows, columns)
            written.append(out / CSV_NAMES[key])
    (out / "results.json").write_text(json.dumps(dict(meta=meta, sections=sections), indent=1) + "\n")
    written.append(out / "results.json")
    for s in sections:
        tag = s["device"]
        for name, key, ylabel, fit_key in PLOTS:
            if s["blocks"] and plotted(s["blocks"], name):
                plot_scaling(s["blocks"], s["fits"], key, ylabel, out / f"{tag}_{name}.png", fit_key)
                written.append(out / f"{tag}_{name}.png")
        if s["models"]:
            plot_models(s["models"], out / f"{tag}_models.png")
            written.append(out / f"{tag}_models.png")
    (out / "results.md").write_text(render(meta, sections) + "\n")
    written.append(out / "results.md")
    return written
