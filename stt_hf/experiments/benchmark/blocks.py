"""The block grid: every module at every (C, H = W, B) point, one worker process per row, the
modules of one point timed in alternation."""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Sequence

import torch

from .measurement import budgeted_repeats, estimate_peak_gb
from .report import fmt
from .spec import BLOCK_COLUMNS, STT_REFERENCE, parse_config
from .worker import BlockWorker, block_static


def block_row(device: torch.device, precision: str, module: str, channels: int, size: int, batch: int,
              reduction: int | None) -> dict:
    """A block row with its static numbers and every measured column still empty."""
    row = dict.fromkeys(BLOCK_COLUMNS)
    row.update(device=device.type, precision=precision, module=module, channels=channels, resolution=size,
               n=size * size, batch=batch, **block_static(module, channels, size, batch, reduction),
               status="ok", note="", repeats=0, rss_method="")
    return row


def measure_grid_point(modules: Sequence[str], channels: int, size: int, batch: int, device: torch.device,
                       precision: str, args: argparse.Namespace) -> list[dict]:
    """All module rows at one (C, size, B): one worker each, started together, then timed in alternation."""
    rows, workers = {}, {}
    for module in modules:
        row = rows[module] = block_row(device, precision, module, channels, size, batch, args.reduction)
        estimate = estimate_peak_gb(module, channels, size, size, batch, row["params"],
                                    backward=not args.forward_only)
        row["est_mem_gb"] = float(f"{estimate:.4g}")
        if estimate > args.max_mem_gb:
            row.update(status="skipped", note=f"est. {estimate:.3g} GB > cap {args.max_mem_gb:.3g} GB")
            continue
        spec = dict(module=module, channels=channels, size=size, batch=batch, device=device.type,
                    precision=precision, reduction=args.reduction, forward_only=args.forward_only,
                    threads=args.threads)
        workers[module] = BlockWorker(spec)  # workers start (import, build) in parallel

    def request(module: str, command: str | None = None) -> dict | None:
        """The worker's reply; None once it has failed (the row says why; the worker is dropped)."""
        try:
            return workers[module].request(command)
        except RuntimeError as err:
            rows[module].update(status="failed", note=str(err))
            workers.pop(module).close()
            return None

    times: dict[str, list[list[float]]] = {}
    repeats: dict[str, int] = {}
    try:
        for module in list(workers):  # wait until built, then warm up; the warm-up time sets the repeats
            if request(module) is None or (warm := request(module, "profile")) is None:
                continue
            peaks = warm["peak_mb"] + [None]
            rows[module].update(peak_fwd_mb=peaks[0], peak_fwd_bwd_mb=peaks[1])
            for _ in range(args.warmup - 1):
                warm = request(module, "time") or warm
            repeats[module] = budgeted_repeats(args.repeats, sum(warm["seconds"]), args.row_budget_s)
            times[module] = []
        for i in range(max(repeats.values(), default=0)):
            for module in list(workers):
                if i < repeats[module] and (reply := request(module, "time")) is not None:
                    times[module].append(reply["seconds"])
        for module in list(workers):
            if (reply := request(module, "rss")) is not None and times[module]:
                fwd = statistics.median(t[0] for t in times[module])
                rows[module].update(repeats=len(times[module]), fwd_ms=fwd * 1e3, fwd_img_s=batch / fwd,
                                    **reply)
                if not args.forward_only:
                    fwd_bwd = statistics.median(t[1] for t in times[module])
                    rows[module].update(fwd_bwd_ms=fwd_bwd * 1e3, fwd_bwd_img_s=batch / fwd_bwd)
    finally:
        for worker in workers.values():
            worker.close()
    return list(rows.values())


def add_ratios_to_stt(rows: list[dict]) -> None:
    """`*_vs_stt`: a row's value / the STT row's at the same (device, C, H, B); STT itself gets 1.0."""
    def point(row: dict) -> tuple:
        return row["device"], row["precision"], row["channels"], row["resolution"], row["batch"]

    reference = {point(r): r for r in rows if r["module"] == STT_REFERENCE}
    for row in rows:
        ref = reference.get(point(row), {})
        for key, ratio in (("fwd_ms", "fwd_vs_stt"), ("fwd_bwd_ms", "fwd_bwd_vs_stt"),
                           ("peak_fwd_mb", "peak_fwd_vs_stt"), ("rss_mb", "rss_vs_stt")):
            value, base = row.get(key), ref.get(key)
            row[ratio] = value / base if value and base else None


def describe_block_row(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['status']} ({row['note']})"
    text = f"fwd {row['fwd_ms']:9.2f} ms"
    if row["fwd_bwd_ms"] is not None:
        text += f", fwd+bwd {row['fwd_bwd_ms']:9.2f} ms"
    return (f"{text} (n={row['repeats']}), peak {fmt(row['peak_fwd_mb'], '.1f')} / "
            f"{fmt(row['peak_fwd_bwd_mb'], '.1f')} MB, RSS {row['rss_mb']:.0f} MB")


def grid_points(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(channels, size) of every block grid point: the --configs, else channels x resolutions."""
    if args.configs:
        return [parse_config(c) for c in args.configs]
    return list(itertools.product(args.channels, args.resolutions))


def run_blocks(args: argparse.Namespace, device: torch.device, precision: str) -> list[dict]:
    """Every row of the block grid on one device."""
    rows = []
    points = grid_points(args)
    total = len(args.batch_sizes) * len(points) * len(args.modules)
    start = time.perf_counter()
    for batch in args.batch_sizes:
        for channels, size in points:
            for row in measure_grid_point(args.modules, channels, size, batch, device, precision, args):
                rows.append(row)
                print(f"[{len(rows)}/{total} {time.perf_counter() - start:5.0f}s] {device.type} "
                      f"C={channels} {size}x{size} B={batch} {row['module']:<22} "
                      f"{describe_block_row(row)}", flush=True)
    add_ratios_to_stt(rows)
    return rows
