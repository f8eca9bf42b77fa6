"""The plots of a run: scaling with N on log-log axes, and model speed relative to the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...plotting import pyplot
from .spec import AXIAL, QUADRATIC, STT_VARIANTS

MODULE_STYLE = {**{m: "-" for m in STT_VARIANTS}, **{m: "--" for m in QUADRATIC}, **{m: "-." for m in AXIAL}}
# (file name, block column, axis label / title, fit column) of each scaling plot
PLOTS = (("latency_vs_n", "fwd_ms", "forward latency (ms)", "k_fwd"),
         ("train_latency_vs_n", "fwd_bwd_ms", "forward+backward latency (ms)", "k_fwd_bwd"),
         ("memory_vs_n", "peak_fwd_bwd_mb", "peak memory, forward+backward (MB)", "k_peak_mem"))


def plotted(rows: list[dict], name: str) -> bool:
    """Whether the scaling plot `name` has anything to show (forward-only runs have no backward)."""
    key = next(p[1] for p in PLOTS if p[0] == name)
    return any(r[key] for r in rows if r["status"] == "ok")


def plot_scaling(rows: list[dict], fits: list[dict], key: str, ylabel: str, path: Path,
                 fit_key: str | None) -> None:
    """One log-log panel per (C, B) series: `key` against N for every module, with fitted lines."""
    plt = pyplot()
    ok = [r for r in rows if r["status"] == "ok" and r[key]]
    channels = sorted({r["channels"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    modules = list(dict.fromkeys(r["module"] for r in rows))
    palette = plt.get_cmap("tab10" if len(modules) <= 10 else "tab20").colors
    colors = {m: palette[i % len(palette)] for i, m in enumerate(modules)}
    fit_of = {(f["module"], f["channels"], f["batch"]): f for f in fits}
    fig, axes = plt.subplots(len(channels), len(batches), figsize=(6.5 * len(batches), 4.8 * len(channels)),
                             squeeze=False)
    for i, c in enumerate(channels):
        for j, b in enumerate(batches):
            ax = axes[i, j]
            for module in modules:
                points = sorted((r["n"], r[key]) for r in ok
                                if (r["module"], r["channels"], r["batch"]) == (module, c, b))
                if not points:
                    continue
                n, y = np.asarray(points).T
                k = fit_of.get((module, c, b), {}).get(fit_key) if fit_key else None
                label = module if k is None else f"{module} (k={k:.2f})"
                ax.plot(n, y, MODULE_STYLE.get(module, ":"), marker="o", color=colors[module], label=label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            sizes = sorted({r["resolution"] for r in rows})
            ax.set_xticks([s * s for s in sizes], [f"{s}x{s}\n{s * s}" for s in sizes], fontsize=8)
            ax.minorticks_off()
            ax.set_title(f"C={c}, B={b}", fontsize=10)
            ax.set_xlabel("N = H*W")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_models(rows: list[dict], path: Path) -> None:
    """Inference and training throughput of each model relative to the reference."""
    plt = pyplot()
    names = [f"{r['model']} ({r['img_size']} px)" for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    ax.barh(y - 0.2, [r["infer_speed_vs_ref"] for r in rows], height=0.4, label="inference")
    ax.barh(y + 0.2, [r["train_speed_vs_ref"] for r in rows], height=0.4, label="training step")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"images/s relative to {rows[0]['reference']} (higher is faster)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
