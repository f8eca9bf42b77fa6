"""Benchmark STT against attention baselines: blocks over a grid, scaling with N = H*W, whole models.

`stt-hf bench` (or `python scripts/benchmark.py`) measures, in one run on one machine:

1. Blocks. Each attention module applied to a (B, C, H, W) feature map, over a grid of channels C,
   resolutions H = W and batch sizes B: parameters, forward FLOPs, the median latency of a forward
   and of a forward+backward, throughput and peak tensor memory. The modules: the STT variants
   (`stt_dense`, `stt_random`, `stt_factorized_random`, `stt_mixture`), dot-product self-attention
   (`self_attn`), the flattened Synthesizer (`flat_dense`; `flat_random` on request) and timm's SE,
   ECA, CBAM and GC, all built by `stt_hf.create_attn` with its defaults, so all sit at the same
   placement (a module mapping the map to a map of the same shape).
2. Scaling. Forward latency against N = H*W on log-log axes, with a fitted exponent k per module
   (latency ~ N^k, np.polyfit of log latency on log N) for every (C, B) series of the grid. The
   targets: STT k <= 1.6, self-attention k >= 1.8, printed as PASS / MISS on each module's series
   with the most work per call (largest C x B with at least three sizes). At small N fixed per-op
   overheads flatten every curve, so the exponents depend on the resolutions measured.
3. Models. stt_resnet50 and its random / mixture variants against timm's resnet50, seresnet50,
   ecaresnet50d, botnet26t_256, halonet26t and lambda_resnet26t (random init, nothing downloaded):
   inference (batch 8) and one SGD training step (a small batch), as ratios to resnet50 measured in
   the same run. Models that cannot run at --img_size (botnet26t_256 has a fixed 256 px input,
   halonet26t needs a multiple of its 8 px halo blocks at every stage) run at their own default
   input size, which the table says.

With CUDA available the same tables are measured again on the GPU in bf16 under autocast and
reported separately.

How each number is measured:

- FLOPs: `torch.utils.flop_counter.FlopCounterMode` on the meta device (no memory, no compute); it
  counts matrix products and convolutions, not softmax, normalization or element-wise ops.
- Latency: the median of --repeats calls, after one untimed warm-up call. A forward runs in eval
  mode under `torch.inference_mode()`; a forward+backward runs in train mode with an input that
  requires grad (as inside a network). The modules of one grid point (and the models) are timed in
  alternation, one call each per round, so load changes on a shared machine hit them alike. A slow
  row gets fewer repeats (at least 2) so that it stays within about --row_budget_s.
- Peak memory: the peak of bytes held by live tensors allocated during the warm-up call. On CPU it
  is read from `torch.profiler` (profile_memory=True) by summing its allocation and free events in
  time order; on CUDA it is the growth of `torch.cuda.max_memory_allocated()`. It is deterministic.
- Training step: forward, cross-entropy, backward and a plain SGD step (no optimizer state).
- Skips: a combination whose estimated forward+backward memory exceeds --max_mem_gb is not run and
  is marked `skipped` in the CSV (the N x N maps of the flattened baselines reach tens of GB at
  112 x 112); a combination that fails is marked `failed` with the error.

Usage:
    stt-hf bench                        # default grid, about 10 minutes on 2 CPU cores
    stt-hf bench --quick --out outputs/bench_quick   # smoke test: a tiny grid, one model pair
    stt-hf bench --channels 128 --resolutions 14 28 56 --batch_sizes 4 --models resnet50 stt_resnet50
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ..layers.create import create_attn
from ..reporting.profiling import count_macs, count_params

# ---------------------------------------------------------------------------------------------------
# What is compared
# ---------------------------------------------------------------------------------------------------

STT_VARIANTS = {"stt_dense": "dense", "stt_random": "random", "stt_factorized_random": "factorized_random",
                "stt_mixture": "mixture"}
BLOCK_MODULES = (*STT_VARIANTS, "self_attn", "flat_dense", "se", "eca", "cbam", "gc")
ALL_BLOCK_MODULES = (*BLOCK_MODULES, "flat_random")
QUADRATIC = ("self_attn", "flat_dense", "flat_random")  # hold (B, N, N) maps

REFERENCE_MODEL = "resnet50"
DEFAULT_MODELS = ("stt_resnet50", "stt_resnet50_random", "stt_resnet50_mixture", "resnet50", "seresnet50",
                  "ecaresnet50d", "botnet26t_256", "halonet26t", "lambda_resnet26t")

# Scaling targets on the fitted forward-latency exponent: (modules, operator, threshold).
EXPONENT_TARGETS = ((tuple(STT_VARIANTS), "<=", 1.6), (("self_attn",), ">=", 1.8))

# Grid and repeat defaults; --quick swaps in the second set (options given explicitly still win).
DEFAULTS = dict(channels=[64, 256], resolutions=[14, 28, 56, 112], batch_sizes=[1, 8], repeats=5,
                model_repeats=3, models=list(DEFAULT_MODELS), img_size=224, infer_batch=8, train_batch=2,
                row_budget_s=6.0)
QUICK = dict(channels=[16], resolutions=[7, 14], batch_sizes=[1], repeats=1, model_repeats=1,
             models=["stt_resnet50"], img_size=64, infer_batch=2, train_batch=2, row_budget_s=1.0)


# ---------------------------------------------------------------------------------------------------
# Measurement primitives (also used by scripts/benchmark_block.py)
# ---------------------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call of fn (synchronized on CUDA)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def timed_forward(model: nn.Module, x: torch.Tensor) -> float:
    """Seconds for one forward pass (synchronized on CUDA)."""
    return timed(lambda: model(x), x.device)


MIN_REPEATS = 2


def budgeted_repeats(requested: int, seconds_per_call: float, budget_s: float) -> int:
    """At most `requested` repeats, fewer if they would exceed the budget, but at least MIN_REPEATS."""
    return max(MIN_REPEATS, min(requested, int(budget_s / max(seconds_per_call, 1e-9))))


def proc_kb(path: str, key: str) -> int:
    """A "Key: N kB" field of a /proc file such as /proc/self/status or /proc/meminfo."""
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


@contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null: the profiler's C++ side logs every start and stop there."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tensor_peak(fn: Callable[[], object], device: torch.device) -> tuple[float, int]:
    """Run fn once; returns (seconds, peak bytes held by tensors allocated during the call)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        seconds = timed(fn, device)
        return seconds, torch.cuda.max_memory_allocated(device) - before
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        seconds = timed(fn, device)
    # The raw event stream: one "[memory]" event per allocation (+bytes) and free (-bytes).
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return seconds, peak


def forward_with_tensor_peak(model: nn.Module, x: torch.Tensor) -> tuple[float, int]:
    """One forward; returns (seconds, peak bytes held by tensors allocated during it)."""
    return tensor_peak(lambda: model(x), x.device)


def estimate_peak_gb(module: str, channels: int, height: int, width: int, batch: int, params: int, *,
                     backward: bool = False) -> float:
    """Rough float32 peak memory of a forward (or forward+backward) of one block, in GB.

    The quadratic baselines hold their logits and softmax output, both (B, N, N), at the same time;
    the others hold a few copies of the feature map. A backward about doubles both, and adds the
    parameter gradients.
    """
    feature_map = batch * channels * height * width * 4
    if module in QUADRATIC:
        activations = 2 * batch * (height * width) ** 2 * 4 + 4 * feature_map
    else:
        activations = 6 * feature_map
    weights = params * 4
    if backward:
        activations, weights = 2 * activations, 2 * weights
    return (activations + weights) / 2**30


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA; float32 (no autocast) otherwise."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# ---------------------------------------------------------------------------------------------------
# Block level
# ---------------------------------------------------------------------------------------------------

def build_block(module: str, channels: int, size: int, device: torch.device | str) -> nn.Module:
    """The block `module` for a (channels, size, size) map, with create_attn's defaults."""
    if module in STT_VARIANTS:
        return create_attn("stt", channels, (size, size), synth=STT_VARIANTS[module], device=device)
    return create_attn(module, channels, (size, size), device=device)


def block_static(module: str, channels: int, size: int, batch: int) -> dict:
    """Parameters and forward GFLOPs (for the whole batch) of one block, counted on the meta device."""
    block = build_block(module, channels, size, "meta").eval()
    return dict(params=count_params(block), gflops=2 * count_macs(block, (channels, size, size), batch) / 1e9)


@dataclass
class BlockCase:
    """One module at one grid point while it is measured: its calls and what they measured."""

    row: dict
    forward: Callable[[], None]
    forward_backward: Callable[[], None]
    repeats: int = 0
    fwd: list[float] = field(default_factory=list)
    fwd_bwd: list[float] = field(default_factory=list)


def block_steps(block: nn.Module, x: torch.Tensor, x_grad: torch.Tensor, precision: str):
    """(forward, forward_backward) closures of one block on the shared inputs."""
    device = x.device

    def forward() -> None:
        block.eval()
        with torch.inference_mode(), autocast(device, precision):
            block(x)

    def forward_backward() -> None:
        block.train()
        block.zero_grad(set_to_none=True)
        x_grad.grad = None
        with autocast(device, precision):
            y = block(x_grad)
        y.backward(torch.ones_like(y))

    return forward, forward_backward


def measure_grid_point(modules: Sequence[str], channels: int, size: int, batch: int, device: torch.device,
                       precision: str, args: argparse.Namespace) -> list[dict]:
    """All module rows at one (C, size, B): built together, warmed up, profiled, then timed in alternation."""
    rows, cases = [], []
    x = torch.randn(batch, channels, size, size, device=device)
    x_grad = x.clone().requires_grad_(True)
    for module in modules:
        row = dict(device=device.type, precision=precision, module=module, channels=channels,
                   resolution=size, n=size * size, batch=batch, **block_static(module, channels, size, batch),
                   est_mem_gb=None, status="ok", note="", repeats=0, fwd_ms=None, fwd_bwd_ms=None,
                   fwd_img_s=None, fwd_bwd_img_s=None, peak_fwd_mb=None, peak_fwd_bwd_mb=None)
        estimate = estimate_peak_gb(module, channels, size, size, batch, row["params"], backward=True)
        row["est_mem_gb"] = float(f"{estimate:.4g}")
        rows.append(row)
        if estimate > args.max_mem_gb:
            row.update(status="skipped", note=f"est. {estimate:.3g} GB > cap {args.max_mem_gb:g} GB")
            continue
        block = build_block(module, channels, size, device)
        cases.append(BlockCase(row, *block_steps(block, x, x_grad, precision)))

    def attempt(case: BlockCase, fn: Callable[[], object]):
        """fn(); None (and the row marked failed) if it raises, e.g. out of memory."""
        try:
            return fn()
        except Exception as err:  # one failing module must not end the run
            case.row.update(status="failed", note=f"{type(err).__name__}: {str(err)[:120]}")
            cases.remove(case)
            return None

    for case in list(cases):  # the untimed warm-up calls measure peak memory; their time sets the repeats
        warm = attempt(case, lambda c=case: (tensor_peak(c.forward, device),
                                             tensor_peak(c.forward_backward, device)))
        if warm is not None:
            (fwd_s, fwd_peak), (fwd_bwd_s, fwd_bwd_peak) = warm
            case.row.update(peak_fwd_mb=fwd_peak / 2**20, peak_fwd_bwd_mb=fwd_bwd_peak / 2**20)
            case.repeats = budgeted_repeats(args.repeats, fwd_s + fwd_bwd_s, args.row_budget_s)
    for i in range(max((c.repeats for c in cases), default=0)):
        for case in list(cases):
            if i < case.repeats:
                pair = attempt(case, lambda c=case: (timed(c.forward, device),
                                                     timed(c.forward_backward, device)))
                if pair is not None:
                    case.fwd.append(pair[0])
                    case.fwd_bwd.append(pair[1])
    for case in cases:
        fwd, fwd_bwd = statistics.median(case.fwd), statistics.median(case.fwd_bwd)
        case.row.update(repeats=len(case.fwd), fwd_ms=fwd * 1e3, fwd_bwd_ms=fwd_bwd * 1e3,
                        fwd_img_s=batch / fwd, fwd_bwd_img_s=batch / fwd_bwd)
    return rows


def describe_block_row(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['status']} ({row['note']})"
    return (f"fwd {row['fwd_ms']:9.2f} ms, fwd+bwd {row['fwd_bwd_ms']:9.2f} ms (n={row['repeats']}), "
            f"peak {row['peak_fwd_mb']:.1f} / {row['peak_fwd_bwd_mb']:.1f} MB")


def run_blocks(args: argparse.Namespace, device: torch.device, precision: str) -> list[dict]:
    """Every row of the block grid on one device."""
    rows = []
    total = len(args.batch_sizes) * len(args.channels) * len(args.resolutions) * len(args.modules)
    start = time.perf_counter()
    for batch in args.batch_sizes:
        for channels in args.channels:
            for size in args.resolutions:
                for row in measure_grid_point(args.modules, channels, size, batch, device, precision, args):
                    rows.append(row)
                    print(f"[{len(rows)}/{total} {time.perf_counter() - start:5.0f}s] {device.type} "
                          f"C={channels} {size}x{size} B={batch} {row['module']:<22} "
                          f"{describe_block_row(row)}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------
# Scaling: latency ~ N^k
# ---------------------------------------------------------------------------------------------------

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
                         k_peak_mem=fit_exponent(n, [r["peak_fwd_bwd_mb"] for r in points])))
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


def check_exponents(headline: dict[tuple[str, str], dict], device: str) -> list[dict]:
    """PASS / MISS of the exponent targets on one device's headline fits (n/a where not measured)."""
    results = []
    for modules, op, threshold in EXPONENT_TARGETS:
        for module in modules:
            fit = headline.get((device, module))
            k = fit["k_fwd"] if fit else None
            status = "n/a (not measured)"
            if k is not None:
                status = "PASS" if (k <= threshold if op == "<=" else k >= threshold) else "MISS"
            results.append(dict(device=device, module=module, k_fwd=k, required=f"{op} {threshold:g}",
                                status=status, series=(f"C={fit['channels']}, B={fit['batch']}, "
                                                       f"N={fit['n_min']}..{fit['n_max']}" if fit else "")))
    return results


# ---------------------------------------------------------------------------------------------------
# Model level
# ---------------------------------------------------------------------------------------------------

def model_kwargs(name: str, img_size: int) -> dict:
    # STT models build their synthesizers for the input size they will see.
    return dict(img_size=img_size) if name.startswith("stt_") else {}


def model_input(name: str, img_size: int) -> tuple[int, str, dict]:
    """(input size, note, static numbers): img_size if the model runs at it, else its own default size.

    Decided with a forward on the meta device, which also counts params and GMACs without any compute.
    """
    def build(size: int) -> nn.Module:
        return timm.create_model(name, pretrained=False, device="meta", **model_kwargs(name, size)).eval()

    model, size, note = build(img_size), img_size, ""
    own_size = model.pretrained_cfg.get("input_size", (3, img_size, img_size))[-1]
    if model.pretrained_cfg.get("fixed_input_size") and own_size != img_size:
        size, note = own_size, f"{own_size} px: fixed input size"
    else:
        try:
            count_macs(model, (3, img_size, img_size))
        except Exception:  # e.g. halonet26t: the feature maps must be multiples of its halo blocks
            size, note = own_size, f"{own_size} px: does not run at {img_size} px"
    if size != img_size:
        model = build(size)
    return size, note, dict(params=count_params(model), gmacs=count_macs(model, (3, size, size)) / 1e9)


@dataclass
class ModelCase:
    row: dict
    infer: Callable[[], None]
    train_step: Callable[[], None]
    infer_times: list[float] = field(default_factory=list)
    train_times: list[float] = field(default_factory=list)


def model_case(name: str, device: torch.device, precision: str, args: argparse.Namespace) -> ModelCase:
    """A random-init model with its inference and training-step closures."""
    size, note, static = model_input(name, args.img_size)
    model = timm.create_model(name, pretrained=False, **model_kwargs(name, size)).to(device)
    # Plain SGD keeps no state, so every step (the first, profiled one too) allocates the same tensors.
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    x_infer = torch.randn(args.infer_batch, 3, size, size, device=device)
    x_train = torch.randn(args.train_batch, 3, size, size, device=device)
    labels = torch.randint(0, model.num_classes, (args.train_batch,), device=device)

    def infer() -> None:
        model.eval()
        with torch.inference_mode(), autocast(device, precision):
            model(x_infer)

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x_train), labels)
        loss.backward()
        optimizer.step()

    row = dict(device=device.type, precision=precision, model=name, img_size=size, note=note, **static,
               infer_batch=args.infer_batch, train_batch=args.train_batch)
    return ModelCase(row, infer, train_step)


def run_models(args: argparse.Namespace, device: torch.device, precision: str) -> list[dict]:
    """Inference and a training step of each model (and the reference), timed in alternation."""
    names = list(dict.fromkeys([args.reference, *args.models]))  # the reference first, once
    cases = []
    for name in names:
        start = time.perf_counter()
        case = model_case(name, device, precision, args)
        # The untimed warm-up calls measure the peak memory.
        _, peak_infer = tensor_peak(case.infer, device)
        _, peak_train = tensor_peak(case.train_step, device)
        case.row.update(peak_infer_mb=peak_infer / 2**20, peak_train_mb=peak_train / 2**20)
        cases.append(case)
        print(f"models: {device.type} {name} ready at {case.row['img_size']} px "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    for i in range(args.model_repeats):
        for case in cases:
            case.infer_times.append(timed(case.infer, device))
        for case in cases:
            case.train_times.append(timed(case.train_step, device))
        print(f"models: {device.type} repeat {i + 1}/{args.model_repeats}", flush=True)
    rows = []
    for case in cases:
        infer, train = statistics.median(case.infer_times), statistics.median(case.train_times)
        case.row.update(repeats=len(case.infer_times), infer_ms=infer * 1e3,
                        infer_img_s=args.infer_batch / infer, train_step_ms=train * 1e3,
                        train_img_s=args.train_batch / train)
        rows.append(case.row)
    ref = rows[0]
    for row in rows:
        row.update(params_vs_ref=row["params"] / ref["params"], gmacs_vs_ref=row["gmacs"] / ref["gmacs"],
                   infer_speed_vs_ref=row["infer_img_s"] / ref["infer_img_s"],
                   train_speed_vs_ref=row["train_img_s"] / ref["train_img_s"])
    return rows


# ---------------------------------------------------------------------------------------------------
# Reporting: CSV, Markdown, plots
# ---------------------------------------------------------------------------------------------------

def fmt(value, spec: str, suffix: str = "", missing: str = "n/a") -> str:
    return missing if value is None else f"{value:{spec}}{suffix}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
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
              fmt(r["peak_fwd_bwd_mb"], ".1f"), str(r["repeats"]),
              "" if r["status"] == "ok" else f"{r['status']}: {r['note']}"] for r in rows]
    return [markdown_table(["C", "HxW", "B", "module", "params", "GFLOPs fwd", "fwd ms", "fwd+bwd ms",
                            "fwd img/s", "peak fwd MB", "peak fwd+bwd MB", "n", "note"], table)]


def render_scaling(fits: list[dict], targets: list[dict]) -> list[str]:
    out = [markdown_table(["module", "k (fwd latency)", "required", "result", "series"],
                          [[t["module"], fmt(t["k_fwd"], ".2f"), t["required"], t["status"], t["series"]]
                           for t in targets]), "",
           "All series (k: fitted exponent of latency, FLOPs or peak memory ~ N^k over the N measured):", ""]
    table = [[f["module"], str(f["channels"]), str(f["batch"]), f"{f['n_min']}..{f['n_max']}",
              str(f["points"]), fmt(f["k_fwd"], ".2f"), fmt(f["k_fwd_bwd"], ".2f"), fmt(f["k_flops"], ".2f"),
              fmt(f["k_peak_mem"], ".2f")] for f in fits]
    out.append(markdown_table(["module", "C", "B", "N", "points", "k fwd", "k fwd+bwd", "k FLOPs",
                               "k peak mem"], table))
    return out


# Speed targets of a model against its plain counterpart: eager images/s ratios, measured in alternation.
MODEL_SPEED_TARGETS = {("stt_resnet50", "resnet50"): (("infer", 0.93), ("train", 0.90))}


def model_targets(rows: list[dict], reference: str) -> list[str]:
    """One line per speed target that applies to these rows, with its PASS / MISS."""
    lines = []
    for row in rows:
        for kind, threshold in MODEL_SPEED_TARGETS.get((row["model"], reference), ()):
            value = row[f"{kind}_speed_vs_ref"]
            lines.append(f"- target: {row['model']} {kind} speed >= {threshold:.2f}x {reference}: "
                         f"{value:.3f}x {'PASS' if value >= threshold else 'MISS'}")
    return lines


def render_models(rows: list[dict], reference: str) -> list[str]:
    table = [[r["model"], str(r["img_size"]), f"{r['params'] / 1e6:.2f}M", f"{r['gmacs']:.2f}",
              f"{r['infer_ms']:.1f}", f"{r['infer_img_s']:.2f}", f"{r['train_step_ms']:.1f}",
              f"{r['train_img_s']:.2f}", f"{r['peak_train_mb']:.0f}", f"{r['params_vs_ref']:.3f}x",
              f"{r['gmacs_vs_ref']:.3f}x", f"{r['infer_speed_vs_ref']:.3f}x",
              f"{r['train_speed_vs_ref']:.3f}x", r["note"]] for r in rows]
    header = ["model", "px", "params", "GMACs/img", "infer ms", "infer img/s", "train step ms", "train img/s",
              "peak train MB", "params", "GMACs", "infer speed", "train speed", "note"]
    targets = model_targets(rows, reference)
    return [f"Ratios are model / {reference} (speed: images per second, higher is faster).", "",
            markdown_table(header, table)] + (["", *targets] if targets else [])


def render(meta: dict, sections: list[dict]) -> str:
    out = ["# STT benchmark", "",
           f"- machine: {meta['machine']}; {meta['threads']} threads; torch {meta['torch']}, "
           f"timm {meta['timm']}, Python {meta['python']}; {meta['date']}",
           f"- command: `{meta['command']}`",
           f"- grid: C {meta['channels']}, H=W {meta['resolutions']}, B {meta['batch_sizes']}; "
           f"{meta['repeats']} repeats (median; at least 2 for rows over {meta['row_budget_s']:g} s); "
           f"memory cap {meta['max_mem_gb']:g} GB",
           f"- models: random init at {meta['img_size']} px, inference batch {meta['infer_batch']}, "
           f"training step batch {meta['train_batch']} (SGD), {meta['model_repeats']} repeats",
           "- FLOPs: matmuls and convolutions (FlopCounterMode); peak MB: live tensor bytes in one call "
           "(torch.profiler on CPU, max_memory_allocated on CUDA); timings on a shared machine are noisy",
           ""]
    for s in sections:
        label, tag = device_label(s["device"], s["precision"]), s["device"]
        if s["blocks"]:
            out += [f"## Blocks ({label})", "", *render_blocks(s["blocks"]), "",
                    f"## Scaling with N = H*W ({label})", "", *render_scaling(s["fits"], s["targets"]), "",
                    f"![forward latency vs N]({tag}_latency_vs_n.png)", "",
                    f"![forward+backward latency vs N]({tag}_train_latency_vs_n.png)", "",
                    f"![peak memory vs N]({tag}_memory_vs_n.png)", ""]
        if s["models"]:
            out += [f"## Models ({label})", "", *render_models(s["models"], meta["reference"]), "",
                    f"![models]({tag}_models.png)", ""]
    return "\n".join(out)


MODULE_STYLE = {**{m: "-" for m in STT_VARIANTS}, **{m: "--" for m in QUADRATIC}}


def plot_scaling(rows: list[dict], fits: list[dict], key: str, ylabel: str, path: Path,
                 fit_key: str | None) -> None:
    """One log-log panel per (C, B) series: `key` against N for every module, with fitted lines."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

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


def plot_models(rows: list[dict], reference: str, path: Path) -> None:
    """Inference and training throughput of each model relative to the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['model']} ({r['img_size']} px)" for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    ax.barh(y - 0.2, [r["infer_speed_vs_ref"] for r in rows], height=0.4, label="inference")
    ax.barh(y + 0.2, [r["train_speed_vs_ref"] for r in rows], height=0.4, label="training step")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"images/s relative to {reference} (higher is faster)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_outputs(out: Path, meta: dict, sections: list[dict]) -> list[Path]:
    """blocks.csv, exponents.csv, models.csv, results.md and the plots; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    blocks = [r for s in sections for r in s["blocks"]]
    models = [r for s in sections for r in s["models"]]
    fits = [f for s in sections for f in s["fits"]]
    written = []
    for name, rows in (("blocks.csv", blocks), ("exponents.csv", fits), ("models.csv", models)):
        if rows:
            write_csv(out / name, rows)
            written.append(out / name)
    for s in sections:
        tag = s["device"]
        if s["blocks"]:
            for name, key, ylabel, fit_key in (
                    ("latency_vs_n", "fwd_ms", "forward latency (ms)", "k_fwd"),
                    ("train_latency_vs_n", "fwd_bwd_ms", "forward+backward latency (ms)", "k_fwd_bwd"),
                    ("memory_vs_n", "peak_fwd_bwd_mb", "peak memory, forward+backward (MB)", "k_peak_mem")):
                plot_scaling(s["blocks"], s["fits"], key, ylabel, out / f"{tag}_{name}.png", fit_key)
                written.append(out / f"{tag}_{name}.png")
        if s["models"]:
            plot_models(s["models"], meta["reference"], out / f"{tag}_models.png")
            written.append(out / f"{tag}_models.png")
    (out / "results.md").write_text(render(meta, sections) + "\n")
    written.append(out / "results.md")
    return written


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The bench options; grid and repeat options left unset take DEFAULTS, or QUICK with --quick."""
    p.add_argument("--out", type=Path, default=Path("outputs/bench"),
                   help="folder for blocks.csv, exponents.csv, models.csv, results.md and the PNGs "
                        "(default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: channels {QUICK['channels']}, sizes {QUICK['resolutions']}, "
                        f"batch {QUICK['batch_sizes']}, 1 repeat, models {QUICK['models']} at "
                        f"{QUICK['img_size']} px")
    p.add_argument("--channels", type=int, nargs="+", help=f"block channels (default {DEFAULTS['channels']})")
    p.add_argument("--resolutions", type=int, nargs="+",
                   help=f"block H = W (default {DEFAULTS['resolutions']})")
    p.add_argument("--batch_sizes", "--batch-sizes", type=int, nargs="+",
                   help=f"block batch sizes (default {DEFAULTS['batch_sizes']})")
    p.add_argument("--modules", nargs="+", choices=ALL_BLOCK_MODULES, default=list(BLOCK_MODULES),
                   help="block modules (default: all but flat_random)")
    p.add_argument("--repeats", type=int, help=f"timed calls per block row (default {DEFAULTS['repeats']})")
    p.add_argument("--row_budget_s", "--row-budget-s", type=float,
                   help="fewer repeats (min 2) for rows whose repeats would take longer than this "
                        f"(default {DEFAULTS['row_budget_s']})")
    p.add_argument("--max_mem_gb", "--max-mem-gb", type=float, default=4.0,
                   help="skip block rows whose estimated forward+backward memory exceeds this (default 4)")
    p.add_argument("--models", nargs="*",
                   help="timm models to compare with the reference; none to skip the model level "
                        f"(default {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--reference", default=REFERENCE_MODEL,
                   help="model the ratios refer to (default %(default)s)")
    p.add_argument("--img_size", "--img-size", type=int, help="model input size (default 224)")
    p.add_argument("--infer_batch", "--infer-batch", type=int, help="inference batch (default 8)")
    p.add_argument("--train_batch", "--train-batch", type=int, help="training-step batch (default 2)")
    p.add_argument("--model_repeats", "--model-repeats", type=int,
                   help=f"timed calls per model (default {DEFAULTS['model_repeats']})")
    p.add_argument("--skip_blocks", "--skip-blocks", action="store_true", help="model level only")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CPU, then CUDA in bf16 when available (default)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch intra-op threads (default: all usable cores, %(default)s)")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset grid and repeat options from the preset; check the rest."""
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.models == ["none"]:
        args.models = []
    for key in ("channels", "resolutions", "batch_sizes"):
        if any(v < 1 for v in getattr(args, key)):
            raise ValueError(f"--{key} must be positive, got {getattr(args, key)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return args


def devices(choice: str) -> list[tuple[torch.device, str]]:
    """(device, precision) pairs to measure: the CPU in float32, CUDA in bf16."""
    cpu = [(torch.device("cpu"), "fp32")]
    cuda = [(torch.device("cuda"), "bf16")] if torch.cuda.is_available() else []
    return {"cpu": cpu, "cuda": cuda}.get(choice, cpu + cuda)


def print_exponents(section: dict) -> None:
    label = device_label(section["device"], section["precision"])
    print(f"\nScaling ({label}): forward latency ~ N^k; k of the series with the largest C x B "
          f"(>= 3 sizes), and its range over all (C, B) series:")
    headline = headline_fits(section["fits"])
    checked = {t["module"]: t for t in section["targets"]}
    for (_, module), fit in headline.items():
        target = checked.get(module)
        verdict = f"  target {target['required']}: {target['status']}" if target else ""
        ks = [f["k_fwd"] for f in section["fits"] if f["module"] == module and f["k_fwd"] is not None]
        print(f"  {module:<22} k = {fit['k_fwd']:.2f}  (C={fit['channels']}, B={fit['batch']}, "
              f"N={fit['n_min']}..{fit['n_max']}; all series {min(ks):.2f}..{max(ks):.2f}; FLOPs "
              f"{fmt(fit['k_flops'], '.2f')}){verdict}", flush=True)
    for target in section["targets"]:
        if target["k_fwd"] is None:
            print(f"  {target['module']:<22} target {target['required']}: {target['status']}", flush=True)


def command_line(args: argparse.Namespace) -> str:
    """The `stt-hf bench` command that repeats this run, every grid option spelled out."""
    parts = ["stt-hf bench", f"--out {args.out}"]
    for key in ("channels", "resolutions", "batch_sizes", "modules", "models"):
        parts.append(f"--{key} " + (" ".join(str(v) for v in getattr(args, key)) or "none"))
    for key in ("repeats", "row_budget_s", "max_mem_gb", "reference", "img_size", "infer_batch",
                "train_batch", "model_repeats", "device", "threads"):
        parts.append(f"--{key} {getattr(args, key)}")
    return " ".join(parts + (["--skip_blocks"] if args.skip_blocks else []))


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark described by parsed options; returns dict(meta=..., sections=[...])."""
    args = resolve_args(args)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    gpu = [torch.cuda.get_device_name()] if torch.cuda.is_available() else []
    try:
        meta = dict(
            machine=" + ".join([cpu_name(), *gpu]), threads=args.threads, torch=torch.__version__,
            timm=timm.__version__, python=platform.python_version(), date=time.strftime("%Y-%m-%d %H:%M"),
            command=command_line(args),
            **{k: getattr(args, k) for k in ("channels", "resolutions", "batch_sizes", "repeats",
                                               "row_budget_s", "max_mem_gb", "img_size", "infer_batch",
                                               "train_batch", "model_repeats", "reference")})
        sections = []
        for device, precision in devices(args.device):
            section = dict(device=device.type, precision=precision, blocks=[], fits=[], targets=[], models=[])
            sections.append(section)
            if not args.skip_blocks:
                print(f"Blocks on {device_label(device.type, precision)}: {len(args.modules)} modules, "
                      f"C {args.channels}, H=W {args.resolutions}, B {args.batch_sizes}", flush=True)
                section["blocks"] = run_blocks(args, device, precision)
                section["fits"] = scaling_fits(section["blocks"])
                section["targets"] = check_exponents(headline_fits(section["fits"]), device.type)
                print_exponents(section)
            if args.models:
                others = [m for m in args.models if m != args.reference]
                print(f"\nModels on {device_label(device.type, precision)}: {args.reference} and "
                      f"{', '.join(others)}", flush=True)
                section["models"] = run_models(args, device, precision)
                for row in section["models"]:
                    print(f"  {row['model']:<22} {row['img_size']} px  "
                          f"infer {row['infer_speed_vs_ref']:.2f}x  train {row['train_speed_vs_ref']:.2f}x  "
                          f"params {row['params_vs_ref']:.2f}x  "
                          f"GMACs {row['gmacs_vs_ref']:.2f}x  (vs {args.reference})", flush=True)
                for line in model_targets(section["models"], args.reference):
                    print(" " + line[1:], flush=True)
        written = write_outputs(args.out, meta, sections)
        print("\nWrote " + ", ".join(str(p) for p in written), flush=True)
        return dict(meta=meta, sections=sections)
    finally:
        torch.set_num_threads(threads)


def run_command(args: argparse.Namespace) -> int:
    try:
        run(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `bench` command to an argparse subparsers object (for `stt-hf bench`)."""
    parser = subparsers.add_parser("bench", help="benchmark STT blocks and models against baselines",
                                   description=__doc__.split("\n\n")[0])
    add_arguments(parser).set_defaults(func=run_command)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """`python scripts/benchmark.py [options]`: parse, run, return the results."""
    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return run(add_arguments(parser).parse_args(argv))
