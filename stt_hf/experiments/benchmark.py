"""Benchmark STT against attention baselines: blocks, scaling with N = H*W, block cost, models, targets.

`stt-hf bench` (or `python scripts/benchmark.py`) measures, in one run on one machine:

1. Blocks. Each attention module applied to a (B, C, H, W) feature map, over a grid of channels C,
   resolutions H = W and batch sizes B (or the explicit C:HxW points of --configs): parameters,
   forward FLOPs, the median latency of a forward and of a forward+backward, throughput, peak tensor
   memory and the process's peak RSS, each also as a ratio to STT (`stt_dense`, STT's defaults) at
   the same point. The modules: the STT variants (`stt_dense`, `stt_random`, `stt_factorized_random`,
   `stt_mixture`), dot-product self-attention (`self_attn`), the flattened Synthesizer (`flat_dense`;
   `flat_random` on request) and timm's SE, ECA, CBAM and GC, all built by `stt_hf.create_attn` with
   its defaults (or the shared --reduction), so all sit at the same placement.
2. Scaling. Forward latency against N = H*W on log-log axes, with a fitted exponent k per module
   (latency ~ N^k, np.polyfit of log latency on log N) for every (C, B) series of the grid. The
   exponent targets are checked on each module's series with the most work per call (largest C x B
   with at least three sizes). At small N fixed per-op overheads flatten every curve, so the
   exponents depend on the resolutions measured.
3. Block cost. An STT block (reduction 16, as in stt_resnet50) against its own two 1x1 convs + BN
   (run as the block runs them, `stt_hf.layers.helpers.conv1x1`) and against the trunk's 1x1
   expansion conv at the same place (ResNet-50 stages 3 and 4 at 224 px: 1024:14x14 and 2048:7x7):
   block / (convs + BN) latency, the GMAC/s of the two convs alone and of the trunk conv, and the
   ATen operators one block forward dispatches.
4. Models. stt_resnet50 and its random / mixture variants against timm's resnet50, seresnet50,
   ecaresnet50d, botnet26t_256, halonet26t and lambda_resnet26t (random init, nothing downloaded):
   inference and one SGD training step, as ratios to resnet50 measured in the same run; with
   --compile also inference under torch.compile. A model is a timm name, optionally with keyword
   arguments for timm.create_model: `stt_resnet50:attn_layer=res_block` is the capacity control
   (a plain bottleneck as wide as STT's values, at the same places). Models that cannot run at --img_size
   (botnet26t_256 has a fixed 256 px input, halonet26t needs a multiple of its 8 px halo blocks at
   every stage) run at their own default input size, which the table says.
5. Targets. Every project target that the run measured, in one table, PASS / MISS with the margin
   (n/a where the run did not measure it): the exponents, STT against self-attention at 256:56x56 and
   128:112x112, the block-cost ratios and stt_resnet50 against resnet50.

Presets (--preset; options given explicitly still win): `grid` (the default: C {64, 256} x H=W
{14, 28, 56, 112} x B {1, 8}, every module, forward and forward+backward, models at 224 px),
`targets` (the points the block targets name, 256:28x28, 256:56x56 and 128:112x112 at batch 8,
STT against the N x N baselines, forward only, memory cap 80% of what is available) and `quick`
(--quick: a tiny grid and one model pair at 64 px, a smoke test). With CUDA available the tables are
measured again on the GPU in bf16 under autocast and reported separately.

How each number is measured:

- FLOPs: `torch.utils.flop_counter.FlopCounterMode` on the meta device (no memory, no compute); it
  counts matrix products and convolutions, not softmax, normalization or element-wise ops.
- Isolation: every block row (one module at one grid point) runs in its own fresh worker process
  (`python -m stt_hf.experiments.benchmark --worker SPEC`), so no row inherits another's allocator
  state. The modules of one grid point are timed in alternation, one call each per round, so load
  changes on a shared machine hit them alike; the models and the cost rows alternate the same way.
- Latency: the median of --repeats calls, after --warmup untimed ones. A forward runs in eval mode
  under `torch.inference_mode()`; a forward+backward runs in train mode with an input that requires
  grad (as inside a network). A slow row gets fewer repeats (at least 2) so that it stays within
  about --row_budget_s.
- Peak memory: the peak of bytes held by live tensors during the first warm-up call. On CPU it is
  read from `torch.profiler` (profile_memory=True) by summing its allocation and free events in time
  order; on CUDA it is the growth of `torch.cuda.max_memory_allocated()`. It is deterministic.
- RSS: the worker's peak resident-set growth over all its calls, from the moment the block is built
  and its input allocated: the kernel's VmHWM after resetting it through /proc/self/clear_refs
  (Linux >= 4.0), else `resource.getrusage().ru_maxrss` growth (a lower bound). It includes the C
  allocator's slack and code paged in on the first call, so it is larger than the tensor peak and
  varies by some 15% from run to run for small rows.
- Training step: forward, cross-entropy, backward and a plain SGD step (no optimizer state).
- Model ratios: every round times each model once, back to back; a model's speed ratio is the median
  over rounds of the reference's time / the model's time in the same round (pairing cancels the slow
  load drift of a shared machine), with a 95% bootstrap interval of that median.
- Skips: a row whose estimated memory exceeds --max_mem_gb is not run and is marked `skipped`
  (the N x N maps of the flattened baselines reach tens of GB at 112 x 112); a row that fails (its
  worker raises or is killed, for example for memory) is marked `failed` with the reason.

Outputs in --out: blocks.csv, exponents.csv, cost.csv, models.csv, targets.csv, results.json (all
of them with the run's settings), results.md and the plots.

Usage:
    stt-hf bench                           # the default grid, about 20 minutes on 2 CPU cores
    stt-hf bench --preset targets          # the targets check, about 7 minutes on 2 CPU cores
    stt-hf bench --quick --out outputs/bench_quick   # smoke test: a tiny grid, one model pair
    stt-hf bench --channels 128 --resolutions 14 28 56 --batch_sizes 4 --models resnet50 stt_resnet50
    stt-hf bench --skip_blocks --skip_cost --models stt_resnet50 stt_resnet50:attn_layer=res_block
"""

from __future__ import annotations

import argparse
import ast
import csv
import itertools
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
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
from ..layers.helpers import conv1x1
from ..layers.stt import STT
from ..reporting.profiling import count_macs, count_params

# ---------------------------------------------------------------------------------------------------
# What is compared
# ---------------------------------------------------------------------------------------------------

STT_VARIANTS = {"stt_dense": "dense", "stt_random": "random", "stt_factorized_random": "factorized_random",
                "stt_mixture": "mixture"}
STT_REFERENCE = "stt_dense"  # STT with its defaults: the block ratios (`*_vs_stt`) divide by this row
BLOCK_MODULES = (*STT_VARIANTS, "self_attn", "flat_dense", "se", "eca", "cbam", "gc")
ALL_BLOCK_MODULES = (*BLOCK_MODULES, "flat_random")
QUADRATIC = ("self_attn", "flat_dense", "flat_random")  # hold (B, N, N) maps

REFERENCE_MODEL = "resnet50"
# stt_resnet50 with a plain bottleneck as wide as STT's values in place of each STT block: what an extra
# block of about STT's size costs at the same places, with no attention.
CAPACITY_CONTROL = "stt_resnet50:attn_layer=res_block"
DEFAULT_MODELS = ("stt_resnet50", "stt_resnet50_random", "stt_resnet50_mixture", "resnet50", "seresnet50",
                  "ecaresnet50d", "botnet26t_256", "halonet26t", "lambda_resnet26t")

# Block cost: ResNet-50 stage 3 (C=1024, 14x14) and 4 (C=2048, 7x7) at 224 px with the registered
# models' STT reduction; the trunk conv is the stage's 1x1 expansion conv (its input channels here).
COST_CONFIGS = {"1024:14x14": 256, "2048:7x7": 512}
COST_REDUCTION = 16

# Presets of the grid, repeat and model options (options given explicitly win). "auto" memory cap:
# 80% of the memory available at the start.
PRESETS = {
    "grid": dict(configs=None, channels=[64, 256], resolutions=[14, 28, 56, 112], batch_sizes=[1, 8],
                 modules=list(BLOCK_MODULES), repeats=5, warmup=1, row_budget_s=6.0, max_mem_gb=4.0,
                 forward_only=False, models=list(DEFAULT_MODELS), img_size=224, infer_batch=8,
                 train_batch=2, model_repeats=3),
    "targets": dict(configs=["256:28x28", "256:56x56", "128:112x112"], channels=[128, 256],
                    resolutions=[28, 56, 112],
                    batch_sizes=[8], modules=[STT_REFERENCE, *QUADRATIC], repeats=10, warmup=1,
                    row_budget_s=20.0, max_mem_gb="auto", forward_only=True,
                    models=["stt_resnet50", CAPACITY_CONTROL], img_size=224, infer_batch=8, train_batch=8,
                    model_repeats=15),
    "quick": dict(configs=None, channels=[16], resolutions=[7, 14], batch_sizes=[1],
                  modules=list(BLOCK_MODULES), repeats=1, warmup=1, row_budget_s=1.0, max_mem_gb=4.0,
                  forward_only=False, models=["stt_resnet50"], img_size=64, infer_batch=2, train_batch=2,
                  model_repeats=1),
}

# ---------------------------------------------------------------------------------------------------
# The one output schema: the columns of each CSV (and of each row list in results.json)
# ---------------------------------------------------------------------------------------------------

BLOCK_COLUMNS = ("device", "precision", "module", "channels", "resolution", "n", "batch", "params", "gflops",
                 "est_mem_gb", "status", "note", "repeats", "fwd_ms", "fwd_bwd_ms", "fwd_img_s",
                 "fwd_bwd_img_s", "peak_fwd_mb", "peak_fwd_bwd_mb", "rss_mb", "rss_method", "fwd_vs_stt",
                 "fwd_bwd_vs_stt", "peak_fwd_vs_stt", "rss_vs_stt")
FIT_COLUMNS = ("device", "precision", "module", "channels", "batch", "points", "n_min", "n_max", "k_fwd",
               "k_fwd_bwd", "k_flops", "k_peak_mem")
BLOCK_PARTS = ("values", "synths", "products", "output")  # STT's steps, timed one by one in the cost section
COST_COLUMNS = ("device", "precision", "config", "channels", "resolution", "trunk_in", "batch", "reduction",
                "repeats", "block_ms", "convs_ms", "conv_pair_ms", "trunk_ms", "values_ms", "synths_ms",
                "products_ms", "output_ms", "block_ops", "convs_gmacs_s", "trunk_gmacs_s", "block_vs_convs",
                "trunk_vs_convs_gmacs")
MODEL_COLUMNS = ("device", "precision", "model", "reference", "img_size", "note", "params", "gmacs",
                 "infer_batch", "train_batch", "peak_infer_mb", "peak_train_mb", "repeats", "infer_ms",
                 "infer_img_s", "train_step_ms", "train_img_s", "compiled_infer_ms", "compiled_infer_img_s",
                 "params_vs_ref", "gmacs_vs_ref", "infer_speed_vs_ref", "infer_speed_ci_low",
                 "infer_speed_ci_high", "train_speed_vs_ref", "train_speed_ci_low", "train_speed_ci_high",
                 "compiled_speed_vs_ref")
TARGET_COLUMNS = ("device", "precision", "target", "measured", "unit", "required", "margin", "status",
                  "where")


# ---------------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One goal: a measured value must satisfy `op threshold`.

    kind "exponent": `metric` of `module`'s headline scaling fit; "block": the `metric` column (a ratio
    to STT) of `module`'s row at `config`, at the largest batch measured; "cost": the `metric` column
    of the cost row at `config`; "model": the `metric` column (a ratio to resnet50) of model `module`.
    """

    label: str
    kind: str
    metric: str
    op: str  # ">=" or "<="
    threshold: float
    module: str = ""
    config: str = ""  # "C:HxW"
    unit: str = "x"


TARGETS = (
    *(Target(f"{m}: forward latency ~ N^k", "exponent", "k_fwd", "<=", 1.6, m, unit="")
      for m in STT_VARIANTS),
    Target("self_attn: forward latency ~ N^k", "exponent", "k_fwd", ">=", 1.8, "self_attn", unit=""),
    Target("self_attn / STT forward latency, 256:56x56", "block", "fwd_vs_stt", ">=", 5.0, "self_attn",
           "256:56x56"),
    Target("self_attn / STT peak memory, 256:56x56", "block", "peak_fwd_vs_stt", ">=", 5.0, "self_attn",
           "256:56x56"),
    Target("self_attn / STT forward latency, 128:112x112", "block", "fwd_vs_stt", ">=", 20.0, "self_attn",
           "128:112x112"),
    *(Target(f"STT block / its two 1x1 convs + BN, {c}", "cost", "block_vs_convs", "<=", 1.2, config=c)
      for c in COST_CONFIGS),
    *(Target(f"trunk 1x1 conv GMAC/s / STT convs' GMAC/s, {c}", "cost", "trunk_vs_convs_gmacs", "<=", 1.3,
             config=c) for c in COST_CONFIGS),
    Target("stt_resnet50 / resnet50 params", "model", "params_vs_ref", "<=", 1.15, "stt_resnet50"),
    Target("stt_resnet50 / resnet50 GMACs", "model", "gmacs_vs_ref", "<=", 1.10, "stt_resnet50"),
    Target("stt_resnet50 / resnet50 inference speed", "model", "infer_speed_vs_ref", ">=", 0.93,
           "stt_resnet50"),
    Target("stt_resnet50 / resnet50 training step speed", "model", "train_speed_vs_ref", ">=", 0.90,
           "stt_resnet50"),
)
TARGET_REFERENCE = "resnet50"  # the model targets are ratios to this model


def parse_config(text: str) -> tuple[int, int]:
    """'256:56x56' (or '256:56') -> (channels, size); the maps are square."""
    channels, sep, size = text.partition(":")
    h, _, w = size.partition("x")
    try:
        c, h, w = int(channels), int(h), int(w or h)
    except ValueError:
        raise ValueError(f"--configs: {text!r} is not C:HxW, e.g. 256:56x56") from None
    if not sep or min(c, h) < 1 or h != w:
        raise ValueError(f"--configs: {text!r} must be C:HxW with positive C and H = W, e.g. 256:56x56")
    return c, h


def config_name(channels: int, size: int) -> str:
    return f"{channels}:{size}x{size}"


# ---------------------------------------------------------------------------------------------------
# Measurement primitives
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


class RssPeak:
    """Peak resident-set growth of this process from the moment of construction."""

    def __init__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the kernel's peak-RSS mark (VmHWM) to the current RSS
            self.method = "VmHWM"
            self.baseline = proc_kb("/proc/self/status", "VmRSS") * 1024
        except OSError:
            self.method = "ru_maxrss"
            self.baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def peak_bytes(self) -> int:
        if self.method == "VmHWM":
            return proc_kb("/proc/self/status", "VmHWM") * 1024 - self.baseline
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.baseline


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


def memory_cap_gb(value: float | str) -> tuple[float, str]:
    """(cap in GB, where it came from) for a --max_mem_gb value: a number, or "auto" (80% available)."""
    if value != "auto":
        return float(value), "--max_mem_gb"
    try:
        return 0.8 * proc_kb("/proc/meminfo", "MemAvailable") / 2**20, "80% of available memory"
    except (OSError, KeyError):
        return 8.0, "8 GB (available memory unknown)"


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA; float32 (no autocast) otherwise."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# ---------------------------------------------------------------------------------------------------
# Block level: one worker process per row
# ---------------------------------------------------------------------------------------------------

def build_block(module: str, channels: int, size: int, device: torch.device | str,
                reduction: int | None = None) -> nn.Module:
    """The block `module` for a (channels, size, size) map, with create_attn's defaults (and `reduction`)."""
    options = {} if reduction is None else dict(reduction=reduction)
    if module in STT_VARIANTS:
        options["synth"] = STT_VARIANTS[module]
        module = "stt"
    return create_attn(module, channels, (size, size), device=device, **options)


def block_static(module: str, channels: int, size: int, batch: int, reduction: int | None = None) -> dict:
    """Parameters and forward GFLOPs (for the whole batch) of one block, counted on the meta device."""
    block = build_block(module, channels, size, "meta", reduction).eval()
    return dict(params=count_params(block), gflops=2 * count_macs(block, (channels, size, size), batch) / 1e9)


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


def serve_block(spec: dict) -> None:
    """Worker side: build one block, then answer requests from stdin, one JSON line each, until "rss".

    "profile": each call once under the memory profiler -> seconds and tensor peaks (the first warm-up);
    "time": each call once, timed -> seconds;  "rss": the process's peak RSS growth, then exit.
    The calls are the forward, then (unless spec["forward_only"]) the forward+backward.
    """
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    channels, size, batch = spec["channels"], spec["size"], spec["batch"]
    block = build_block(spec["module"], channels, size, device, spec["reduction"])
    x = torch.randn(batch, channels, size, size, device=device)
    x_grad = x.clone().requires_grad_(True)
    forward, forward_backward = block_steps(block, x, x_grad, spec["precision"])
    calls = (forward,) if spec["forward_only"] else (forward, forward_backward)
    rss = RssPeak()  # baseline: block built, inputs allocated

    def reply(message: dict) -> None:
        print(json.dumps(message), flush=True)

    reply(dict(ready=True, pid=os.getpid()))
    for command in sys.stdin:
        command = command.strip()
        if command == "profile":
            measured = [tensor_peak(call, device) for call in calls]
            reply(dict(seconds=[s for s, _ in measured], peak_mb=[p / 2**20 for _, p in measured]))
        elif command == "time":
            reply(dict(seconds=[timed(call, device) for call in calls]))
        else:
            reply(dict(rss_mb=rss.peak_bytes() / 2**20, rss_method=rss.method))
            return


WORKER_MODULE = "stt_hf.experiments.benchmark"


class BlockWorker:
    """Parent side: one block row in its own Python process, driven by JSON lines."""

    def __init__(self, spec: dict):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, "-m", WORKER_MODULE, "--worker", json.dumps(spec)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True)

    def request(self, command: str | None = None) -> dict:
        """Send `command` (None: only wait for the next reply); raise RuntimeError if the worker died."""
        try:
            if command:
                self.proc.stdin.write(command + "\n")
                self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            while line and not line.startswith("{"):  # skip anything else a library printed
                line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(self.failure())
        return json.loads(line)

    def failure(self) -> str:
        code = self.proc.wait()
        if code < 0:
            return f"worker killed by signal {-code}, likely out of memory"
        self.stderr.seek(0)
        last = (self.stderr.read().strip().splitlines() or ["no message"])[-1]
        return f"worker failed: {last[:120]}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                stream.close()
            except BrokenPipeError:  # stdin still held a request the dead worker never read
                pass


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


# ---------------------------------------------------------------------------------------------------
# Block cost: an STT block against its own convolutions and the trunk's
# ---------------------------------------------------------------------------------------------------

def count_ops(fn: Callable[[], object]) -> int:
    """ATen operators one call of fn dispatches (views and the like included): the small-op overhead."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def run_cost(args: argparse.Namespace, device: torch.device, precision: str) -> list[dict]:
    """Per cost config: the STT block, its two 1x1 convs + BN, the two convs alone and the trunk's 1x1
    conv, alternating; and the block's parts one by one on fixed inputs (values: the first projection;
    synths: the attention maps; products: the mode products; output: projection, BN and residual), to
    show where its time goes.

    Eval mode, batch --infer_batch; 3 x --repeats rounds, as these calls are short.
    """
    rows, batch = [], args.infer_batch
    for config, trunk_in in COST_CONFIGS.items():
        channels, size = parse_config(config)
        stt = STT(channels, feat_size=(size, size), reduction=COST_REDUCTION, device=device).eval()
        trunk = nn.Conv2d(trunk_in, channels, 1, bias=False, device=device).eval()
        x = torch.randn(batch, channels, size, size, device=device)
        x_trunk = torch.randn(batch, trunk_in, size, size, device=device)
        with torch.inference_mode(), autocast(device, precision):
            v = stt.values(x)
            maps = stt.attention_maps(v)
            y = stt.transform(v, maps).reshape(batch, -1, size, size)
        calls = {"block": lambda stt=stt, x=x: stt(x),
                 "convs": lambda stt=stt, x=x: stt.norm(conv1x1(conv1x1(x, stt.to_v.weight),
                                                                 stt.proj.weight)),
                 "conv_pair": lambda stt=stt, x=x: conv1x1(conv1x1(x, stt.to_v.weight), stt.proj.weight),
                 "trunk": lambda trunk=trunk, x=x_trunk: trunk(x),
                 "values": lambda stt=stt, x=x: stt.values(x),
                 "synths": lambda stt=stt, v=v: stt.attention_maps(v),
                 "products": lambda stt=stt, v=v, maps=maps: stt.transform(v, maps),
                 "output": lambda stt=stt, x=x, y=y: stt.output(x, y)}
        times = {k: [] for k in calls}
        with torch.inference_mode(), autocast(device, precision):
            for call in calls.values():
                for _ in range(args.warmup):
                    call()
            for _ in range(3 * args.repeats):
                for k, call in calls.items():
                    times[k].append(timed(call, device))
            ops = count_ops(calls["block"])
        med = {k: statistics.median(v) for k, v in times.items()}
        cv = stt.to_v.out_channels
        # GMAC/s of the convolutions themselves (BN has no MACs; its time is in block / convs + BN).
        convs_gmacs_s = 2 * channels * cv * size * size * batch / med["conv_pair"] / 1e9
        trunk_gmacs_s = trunk_in * channels * size * size * batch / med["trunk"] / 1e9
        rows.append(dict(device=device.type, precision=precision, config=config, channels=channels,
                         resolution=size, trunk_in=trunk_in, batch=batch, reduction=COST_REDUCTION,
                         repeats=len(times["block"]), block_ms=med["block"] * 1e3,
                         convs_ms=med["convs"] * 1e3, conv_pair_ms=med["conv_pair"] * 1e3,
                         trunk_ms=med["trunk"] * 1e3,
                         **{f"{part}_ms": med[part] * 1e3 for part in BLOCK_PARTS},
                         block_ops=ops,
                         convs_gmacs_s=convs_gmacs_s, trunk_gmacs_s=trunk_gmacs_s,
                         block_vs_convs=med["block"] / med["convs"],
                         trunk_vs_convs_gmacs=trunk_gmacs_s / convs_gmacs_s))
        print(f"cost: {device.type} {config}: block {med['block'] * 1e3:.2f} ms, convs+BN "
              f"{med['convs'] * 1e3:.2f} ms (convs alone {med['conv_pair'] * 1e3:.2f}), trunk conv "
              f"{med['trunk'] * 1e3:.2f} ms, {ops} ops; parts "
              + ", ".join(f"{part} {med[part] * 1e3:.2f}" for part in BLOCK_PARTS) + " ms", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------
# Model level
# ---------------------------------------------------------------------------------------------------

def parse_model_spec(spec: str) -> tuple[str, dict]:
    """'name' or 'name:key=value,key=value' -> (timm name, create_model keyword arguments).

    Values are Python literals where they parse as one (3, 0.5, True, [1, 2]), else strings.
    """
    name, sep, options = spec.partition(":")
    kwargs = {}
    for item in options.split(",") if sep else ():
        key, eq, value = item.partition("=")
        if not (eq and key.strip().isidentifier() and value.strip()):
            raise ValueError(f"--models: {spec!r}: each option must be key=value, e.g. "
                             f"stt_resnet50:attn_layer=res_block; got {item!r}")
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = value.strip()
    if not timm.is_model(name):
        raise ValueError(f"--models: {spec!r}: {name!r} is not a registered timm model")
    return name, kwargs


def create_model(spec: str, img_size: int, **kwargs) -> nn.Module:
    """A random-init timm model from a model spec (see parse_model_spec) for `img_size` inputs."""
    name, options = parse_model_spec(spec)
    if name.startswith("stt_"):  # STT models build their synthesizers for the input size they will see
        options["img_size"] = img_size
    return timm.create_model(name, pretrained=False, **options, **kwargs)


def paired_ratio(reference: Sequence[float], times: Sequence[float], resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(median, 95% low, 95% high) over rounds of reference time / time, timed in the same round.

    The interval is a percentile bootstrap of the median (seeded: the same times give the same interval).
    """
    ratios = [r / t for r, t in zip(reference, times, strict=True)]
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return statistics.median(ratios), medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def model_input(name: str, img_size: int) -> tuple[int, str, dict]:
    """(input size, note, static numbers): img_size if the model runs at it, else its own default size.

    Decided with a forward on the meta device, which also counts params and GMACs without any compute.
    """
    def build(size: int) -> nn.Module:
        return create_model(name, size, device="meta").eval()

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
    """One model while it is measured: its calls (inference, training step, compiled inference)."""

    row: dict
    infer: Callable[[], None]
    train_step: Callable[[], None]
    compiled_infer: Callable[[], None] | None = None
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def model_case(name: str, reference: str, device: torch.device, precision: str,
               args: argparse.Namespace) -> ModelCase:
    """A random-init model with its inference and training-step closures (and compiled inference)."""
    size, note, static = model_input(name, args.img_size)
    model = create_model(name, size).to(device)
    # Plain SGD keeps no state, so every step (the first, profiled one too) allocates the same tensors.
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    x_infer = torch.randn(args.infer_batch, 3, size, size, device=device)
    x_train = torch.randn(args.train_batch, 3, size, size, device=device)
    labels = torch.randint(0, model.num_classes, (args.train_batch,), device=device)

    def inference(net: nn.Module) -> Callable[[], None]:
        def infer() -> None:
            model.eval()
            with torch.inference_mode(), autocast(device, precision):
                net(x_infer)
        return infer

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x_train), labels)
        loss.backward()
        optimizer.step()

    row = dict.fromkeys(MODEL_COLUMNS)
    row.update(device=device.type, precision=precision, model=name, reference=reference, img_size=size,
               note=note, **static, infer_batch=args.infer_batch, train_batch=args.train_batch)
    compiled = inference(torch.compile(model, backend=args.compile)) if args.compile else None
    return ModelCase(row, inference(model), train_step, compiled)


def run_models(args: argparse.Namespace, device: torch.device, precision: str) -> list[dict]:
    """Inference and a training step of each model (and the reference), timed in alternation."""
    names = list(dict.fromkeys([args.reference, *args.models]))  # the reference first, once
    cases = []
    for name in names:
        start = time.perf_counter()
        case = model_case(name, args.reference, device, precision, args)
        # The first warm-up calls measure the peak memory.
        _, peak_infer = tensor_peak(case.infer, device)
        _, peak_train = tensor_peak(case.train_step, device)
        for _ in range(args.warmup - 1):
            case.infer()
            case.train_step()
        for _ in range(args.warmup if case.compiled_infer else 0):  # the first compiles
            case.compiled_infer()
        case.row.update(peak_infer_mb=peak_infer / 2**20, peak_train_mb=peak_train / 2**20)
        cases.append(case)
        print(f"models: {device.type} {name} ready at {case.row['img_size']} px "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    for i in range(args.model_repeats):
        for kind in ("infer", "train_step", "compiled_infer"):
            for case in cases:
                if (call := getattr(case, kind)) is not None:
                    case.times[kind].append(timed(call, device))
        print(f"models: {device.type} repeat {i + 1}/{args.model_repeats}", flush=True)
    rows = []
    for case in cases:
        med = {kind: statistics.median(times) for kind, times in case.times.items()}
        case.row.update(repeats=len(case.times["infer"]), infer_ms=med["infer"] * 1e3,
                        infer_img_s=args.infer_batch / med["infer"], train_step_ms=med["train_step"] * 1e3,
                        train_img_s=args.train_batch / med["train_step"])
        if "compiled_infer" in med:
            case.row.update(compiled_infer_ms=med["compiled_infer"] * 1e3,
                            compiled_infer_img_s=args.infer_batch / med["compiled_infer"])
        rows.append(case.row)
    ref, ref_times = rows[0], cases[0].times
    for row, case in zip(rows, cases, strict=True):
        infer = paired_ratio(ref_times["infer"], case.times["infer"])
        train = paired_ratio(ref_times["train_step"], case.times["train_step"])
        row.update(params_vs_ref=row["params"] / ref["params"], gmacs_vs_ref=row["gmacs"] / ref["gmacs"],
                   infer_speed_vs_ref=infer[0], infer_speed_ci_low=infer[1], infer_speed_ci_high=infer[2],
                   train_speed_vs_ref=train[0], train_speed_ci_low=train[1], train_speed_ci_high=train[2])
        if row["compiled_infer_img_s"] is not None:
            row["compiled_speed_vs_ref"] = paired_ratio(ref_times["compiled_infer"],
                                                        case.times["compiled_infer"])[0]
    return rows


# ---------------------------------------------------------------------------------------------------
# Targets: PASS / MISS
# ---------------------------------------------------------------------------------------------------

def target_value(target: Target, section: dict) -> tuple[float | None, str]:
    """(measured value, where it was measured) of one target in one device's results."""
    if target.kind == "exponent":
        fit = headline_fits(section["fits"]).get((section["device"], target.module))
        if fit is None:
            return None, ""
        return fit[target.metric], f"C={fit['channels']}, B={fit['batch']}, N={fit['n_min']}..{fit['n_max']}"
    if target.kind == "block":
        channels, size = parse_config(target.config)
        rows = [r for r in section["blocks"] if (r["module"], r["channels"], r["resolution"])
                == (target.module, channels, size) and r[target.metric] is not None]
        row = max(rows, key=lambda r: r["batch"], default=None)
        return (row[target.metric], f"B={row['batch']}") if row else (None, "")
    if target.kind == "cost":
        row = next((r for r in section["cost"] if r["config"] == target.config), None)
        return (row[target.metric], f"B={row['batch']}") if row else (None, "")
    row = next((r for r in section["models"] if r["model"] == target.module
                and r["reference"] == TARGET_REFERENCE), None)
    if row is None:
        return None, ""
    low, high = (row.get(target.metric.replace("_vs_ref", f"_ci_{end}")) for end in ("low", "high"))
    interval = f", 95% CI {low:.3f}-{high:.3f}" if low is not None and high is not None else ""
    return row[target.metric], f"{row['img_size']} px{interval}"


def check_targets(section: dict, targets: Sequence[Target] = TARGETS) -> list[dict]:
    """One row per target: measured, required, margin (positive: met with room) and PASS / MISS / n/a."""
    results = []
    for t in targets:
        value, where = target_value(t, section)
        margin = None if value is None else (value - t.threshold if t.op == ">=" else t.threshold - value)
        status = "n/a (not measured)" if margin is None else "PASS" if margin >= 0 else "MISS"
        results.append(dict(device=section["device"], precision=section["precision"], target=t.label,
                            measured=value, unit=t.unit, required=f"{t.op} {t.threshold:g}{t.unit}",
                            margin=margin, status=status, where=where))
    return results


# ---------------------------------------------------------------------------------------------------
# Reporting: CSV, JSON, Markdown, plots
# ---------------------------------------------------------------------------------------------------

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
            "block ops: ATen operators per forward; "
            "parts: the block's steps timed one by one (values = first projection, synths = attention maps, "
            "products = mode products, output = projection + BN + residual).", "",
            markdown_table(["C:HxW", "B", "block ms", "convs+BN ms", "convs ms", "trunk conv ms",
                            "block/convs", "convs GMAC/s", "trunk GMAC/s", "trunk/convs GMAC/s", "block ops",
                            "parts ms: values / synths / products / output"], table)]


def interval(row: dict, kind: str) -> str:
    return f" ({row[f'{kind}_speed_ci_low']:.3f}-{row[f'{kind}_speed_ci_high']:.3f})"


def render_models(rows: list[dict]) -> list[str]:
    compiled = any(r["compiled_infer_ms"] is not None for r in rows)
    table = [[r["model"], str(r["img_size"]), f"{r['params'] / 1e6:.2f}M", f"{r['gmacs']:.2f}",
              f"{r['infer_ms']:.1f}", f"{r['infer_img_s']:.2f}", f"{r['train_step_ms']:.1f}",
              f"{r['train_img_s']:.2f}", f"{r['peak_train_mb']:.0f}", f"{r['params_vs_ref']:.3f}x",
              f"{r['gmacs_vs_ref']:.3f}x", f"{r['infer_speed_vs_ref']:.3f}x" + interval(r, "infer"),
              f"{r['train_speed_vs_ref']:.3f}x" + interval(r, "train")]
             + ([fmt(r["compiled_infer_img_s"], ".2f"), fmt(r["compiled_speed_vs_ref"], ".3f", "x")]
                if compiled else []) + [r["note"]] for r in rows]
    header = ["model", "px", "params", "GMACs/img", "infer ms", "infer img/s", "train step ms", "train img/s",
              "peak train MB", "params", "GMACs", "infer speed", "train speed"]
    header += ["compiled img/s", "compiled speed"] if compiled else []
    return [f"Ratios are model / {rows[0]['reference']} (speed: images per second, higher is faster; the "
            "median over rounds of the paired ratio, with its 95% bootstrap interval).", "",
            markdown_table(header + ["note"], table)]


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


MODULE_STYLE = {**{m: "-" for m in STT_VARIANTS}, **{m: "--" for m in QUADRATIC}}
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


def plot_models(rows: list[dict], path: Path) -> None:
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
    ax.set_xlabel(f"images/s relative to {rows[0]['reference']} (higher is faster)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------

def memory_option(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GB or 'auto', got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The bench options; grid, repeat and model options left unset take the --preset's values."""
    def preset_values(key: str) -> str:
        return "; ".join(f"{name}: {values[key]}" for name, values in PRESETS.items())

    p.add_argument("--out", type=Path, default=Path("outputs/bench"),
                   help="folder for the CSVs, results.json, results.md and the PNGs (default: %(default)s)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="grid",
                   help="grid: the scaling grid (default); targets: the points the targets name, forward "
                        "only; quick: a smoke test")
    p.add_argument("--quick", dest="preset", action="store_const", const="quick", help="--preset quick")
    p.add_argument("--configs", nargs="+", metavar="C:HxW",
                   help="explicit block points instead of channels x resolutions, e.g. 256:56x56 "
                        f"({preset_values('configs')})")
    p.add_argument("--channels", type=int, nargs="+", help=f"block channels ({preset_values('channels')})")
    p.add_argument("--resolutions", type=int, nargs="+", help=f"block H = W ({preset_values('resolutions')})")
    p.add_argument("--batch_sizes", "--batch-sizes", type=int, nargs="+",
                   help=f"block batch sizes ({preset_values('batch_sizes')})")
    p.add_argument("--modules", nargs="+", choices=ALL_BLOCK_MODULES,
                   help="block modules (grid, quick: all but flat_random; targets: stt_dense and the N x N "
                        "baselines)")
    p.add_argument("--reduction", type=int,
                   help="value-channel reduction shared by every block that has one (default: each "
                        "module's own, 2 for STT and the N x N baselines)")
    p.add_argument("--forward_only", "--forward-only", action=argparse.BooleanOptionalAction,
                   help="time block forwards only, no forward+backward (targets: yes; grid, quick: no)")
    p.add_argument("--repeats", type=int, help=f"timed calls per block row ({preset_values('repeats')})")
    p.add_argument("--warmup", type=int,
                   help="untimed calls first, at least 1; the first also measures peak memory (default 1)")
    p.add_argument("--row_budget_s", "--row-budget-s", type=float,
                   help="fewer repeats (min 2) for rows whose repeats would take longer than this "
                        f"({preset_values('row_budget_s')})")
    p.add_argument("--max_mem_gb", "--max-mem-gb", type=memory_option,
                   help="skip block rows whose estimated memory exceeds this many GB; 'auto': 80%% of the "
                        f"memory available ({preset_values('max_mem_gb')})")
    p.add_argument("--skip_blocks", "--skip-blocks", action="store_true", help="no block rows (and no fits)")
    p.add_argument("--skip_cost", "--skip-cost", action="store_true",
                   help=f"no block-cost rows ({', '.join(COST_CONFIGS)})")
    p.add_argument("--models", nargs="*",
                   help="timm models to compare with the reference; none (or --skip_models) to skip the "
                        f"model level (grid: {' '.join(DEFAULT_MODELS)}; targets, quick: stt_resnet50)")
    p.add_argument("--skip_models", "--skip-models", action="store_true", help="no model level")
    p.add_argument("--reference", default=REFERENCE_MODEL,
                   help="model the ratios refer to (default %(default)s)")
    p.add_argument("--img_size", "--img-size", type=int,
                   help=f"model input size ({preset_values('img_size')})")
    p.add_argument("--infer_batch", "--infer-batch", type=int,
                   help=f"inference batch, also of the cost rows ({preset_values('infer_batch')})")
    p.add_argument("--train_batch", "--train-batch", type=int,
                   help=f"training-step batch ({preset_values('train_batch')})")
    p.add_argument("--model_repeats", "--model-repeats", type=int,
                   help=f"timed calls per model ({preset_values('model_repeats')})")
    p.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                   help="also time model inference under torch.compile (default backend inductor: minutes "
                        "of code generation on a small CPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CPU, then CUDA in bf16 when available (default)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch intra-op threads (default: all usable cores, %(default)s)")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the preset; check them all (ValueError with the option's name)."""
    explicit_grid = args.channels is not None or args.resolutions is not None
    if explicit_grid and args.configs is not None:
        raise ValueError("--configs replaces --channels and --resolutions: give one or the other")
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None and not (key == "configs" and explicit_grid):
            setattr(args, key, list(value) if isinstance(value, list) else value)
    if args.configs:
        args.channels = sorted({c for c, _ in grid_points(args)})  # grid_points checks each config
        args.resolutions = sorted({s for _, s in grid_points(args)})
    if args.models == ["none"] or args.skip_models:
        args.models = []
    for spec in (args.reference, *args.models):
        parse_model_spec(spec)  # a clear error now rather than after the block rows
    for key in ("channels", "resolutions", "batch_sizes"):
        if any(v < 1 for v in getattr(args, key)):
            raise ValueError(f"--{key} must be positive, got {getattr(args, key)}")
    for key in ("repeats", "warmup", "model_repeats", "img_size", "infer_batch", "train_batch", "threads"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key} must be at least 1, got {getattr(args, key)}")
    if args.reduction is not None and args.reduction < 1:
        raise ValueError(f"--reduction must be at least 1, got {args.reduction}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    args.max_mem_gb, args.max_mem_source = memory_cap_gb(args.max_mem_gb)
    return args


def devices(choice: str) -> list[tuple[torch.device, str]]:
    """(device, precision) pairs to measure: the CPU in float32, CUDA in bf16."""
    cpu = [(torch.device("cpu"), "fp32")]
    cuda = [(torch.device("cuda"), "bf16")] if torch.cuda.is_available() else []
    return {"cpu": cpu, "cuda": cuda}.get(choice, cpu + cuda)


def command_line(args: argparse.Namespace) -> str:
    """The `stt-hf bench` command that repeats this run, every option spelled out."""
    parts = ["stt-hf bench", f"--out {args.out}"]
    grid = ("configs",) if args.configs else ("channels", "resolutions")
    for key in (*grid, "batch_sizes", "modules", "models"):
        parts.append(f"--{key} " + (" ".join(str(v) for v in getattr(args, key)) or "none"))
    for key in ("repeats", "warmup", "row_budget_s", "reference", "img_size", "infer_batch", "train_batch",
                "model_repeats", "device", "threads"):
        parts.append(f"--{key} {getattr(args, key)}")
    parts.append(f"--max_mem_gb {args.max_mem_gb:.3g}")
    flags = dict(forward_only=args.forward_only, skip_blocks=args.skip_blocks, skip_cost=args.skip_cost)
    parts += [f"--{key}" for key, on in flags.items() if on]
    parts += [f"--reduction {args.reduction}"] if args.reduction is not None else []
    parts += [f"--compile {args.compile}"] if args.compile else []
    return " ".join(parts)


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
            command=command_line(args), rss_method="",
            **{k: getattr(args, k) for k in ("preset", "configs", "channels", "resolutions", "batch_sizes",
                                               "modules", "reduction", "forward_only", "repeats", "warmup",
                                               "row_budget_s", "max_mem_gb", "max_mem_source", "img_size",
                                               "models", "infer_batch", "train_batch", "model_repeats",
                                               "reference", "compile")})
        sections = []
        for device, precision in devices(args.device):
            label = device_label(device.type, precision)
            section = dict(device=device.type, precision=precision, blocks=[], fits=[], cost=[], models=[],
                           targets=[])
            sections.append(section)
            if not args.skip_blocks:
                print(f"Blocks on {label}: {len(args.modules)} modules at "
                      f"{', '.join(config_name(c, s) for c, s in grid_points(args))}, B {args.batch_sizes}",
                      flush=True)
                section["blocks"] = run_blocks(args, device, precision)
                section["fits"] = scaling_fits(section["blocks"])
                meta["rss_method"] = meta["rss_method"] or next(
                    (r["rss_method"] for r in section["blocks"] if r["rss_method"]), "")
            if not args.skip_cost:
                section["cost"] = run_cost(args, device, precision)
            if args.models:
                others = [m for m in args.models if m != args.reference]
                print(f"\nModels on {label}: {args.reference} and {', '.join(others)}", flush=True)
                section["models"] = run_models(args, device, precision)
                for row in section["models"]:
                    print(f"  {row['model']:<36} {row['img_size']} px  "
                          f"infer {row['infer_speed_vs_ref']:.3f}x{interval(row, 'infer')}  "
                          f"train {row['train_speed_vs_ref']:.3f}x{interval(row, 'train')}  "
                          f"params {row['params_vs_ref']:.2f}x  "
                          f"GMACs {row['gmacs_vs_ref']:.2f}x  (vs {args.reference})", flush=True)
            section["targets"] = check_targets(section)
            print(f"\nTargets ({label}):\n" + "\n".join(render_targets(section["targets"])), flush=True)
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
    """`python scripts/benchmark.py [options]`: parse, run, return the results.

    `--worker SPEC` (internal, how the block rows run in their own processes): serve one block.
    """
    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = add_arguments(parser).parse_args(argv)
    if args.worker:
        serve_block(json.loads(args.worker))
        return {}
    return run(args)


if __name__ == "__main__":
    main()
