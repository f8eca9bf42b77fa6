"""Scaling with N = H*W: a fitted exponent k (latency ~ N^k) per measured series."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def fit_exponent(n: Sequence[float], latency: Sequence[float]) -> float | None:
    """k in latency ~ a * N^k: the slope of the least-squares line through (log N, log latency).

    None with fewer than two distinct N (or no positive values) to fit.
    """
    n, latency = np.asarray(n, dtype=float), np.asarray(latency, dtype=float)
    keep = (n > 0) & (latency > 0) & np.isfinite(latency)
    if len(np.unique(n[keep])) < 2:
        return None
    return float(np.polyfit(np.log(n[keep]), np.log(latency[keep]), 1)[0])


def scaling_fits(rows: list[dict]) -> list[dict]:
    """One fit per (device, precision, module, C, B) series of measured rows."""
    series = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            key = (row["device"], row["precision"], row["module"], row["channels"], row["batch"])
            series[key].append(row)
    fits = []
    for (device, precision, module, channels, batch), points in series.items():
        points = sorted(points, key=lambda r: r["n"])
        n = [r["n"] for r in points]
        fits.append(dict(device=device, precision=precision, module=module, channels=channels, batch=batch,
                         points=len(points), n_min=n[0], n_max=n[-1],
                         k_fwd=fit_exponent(n, [r["fwd_ms"] for r in points]),
                         k_fwd_bwd=fit_exponent(n, [r["fwd_bwd_ms"] for r in points]),
                         k_flops=fit_exponent(n, [r["gflops"] for r in points]),
                         k_peak_mem=fit_exponent(n, [r["peak_fwd_bwd_mb"] or r["peak_fwd_mb"]
                                                     for r in points])))
    return fits


def headline_fits(fits: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (device, module): the series with the most work per call (C x B) among those with at least
    three resolutions (then more points, a wider N range).

    Fixed per-op overheads flatten the small-N end of a curve; the largest C x B suffers least from
    them, so its exponent is the closest to the asymptotic one. Every module is picked by this rule.
    """
    best = {}
    for fit in fits:
        if fit["k_fwd"] is None:
            continue
        key = (fit["device"], fit["module"])
        rank = (fit["points"] >= 3, fit["channels"] * fit["batch"], fit["points"], fit["n_max"])
        if key not in best or rank > best[key][0]:
            best[key] = (rank, fit)
    return {key: fit for key, (_, fit) in best.items()}
