"""Benchmark STT against dot-product self-attention and the flattened Synthesizer.

Two levels, measured in one run on one machine, so the ratios compare like with like:

1. Block level: an STT block against `self_attn` (SelfAttention2d, non-local dot-product attention) and
   the flattened Synthesizer (`flat_dense`, `flat_random`) on (batch, C, H, W) feature maps. For each
   module: parameters, FLOPs, median forward latency and peak memory, and each as a ratio to STT.
2. Model level: `stt_resnet50` against timm's `resnet50`: parameters, GMACs, inference throughput.

Then the project's targets are checked and printed as PASS / MISS with the measured margin.

How each number is measured:

- FLOPs: `torch.utils.flop_counter.FlopCounterMode`, which counts matrix products and convolutions
  (not softmax, normalization or element-wise ops). Blocks are counted on the "meta" device, so even
  the N x N baselines cost no memory or time to count. GMACs = FLOPs / 2, per image.
- Latency: forward passes under `torch.inference_mode()`, after --warmup untimed ones; the median of
  the timed repeats. Block rows take --repeats, capped so that a row's timed forwards stay within
  --row-budget-s but never fewer than 2 (a 30 s forward of the N x N baselines at 112x112 gets 2);
  the table shows how many were used. The modules of one config are timed in alternation, one
  forward each per round, so load changes on a shared machine hit them alike.
- Peak memory: every block row runs in its own fresh worker process (this script with --worker), so
  one row cannot inherit another's allocator state. Two numbers, both taken from the moment the
  module is built and its input allocated:
  * peak MB (used for the ratios and the target): the peak of the bytes held by live tensors during
    one forward. On CPU it is read from `torch.profiler` (profile_memory=True) by summing its
    allocation and free events in time order; on CUDA it is `torch.cuda.max_memory_allocated()`
    growth. It is deterministic: the same module and input give the same number on every run.
  * RSS MB: the process's peak resident-set growth over all its forwards, read from the kernel
    (VmHWM after resetting it through /proc/self/clear_refs, Linux >= 4.0; where that is unavailable,
    `resource.getrusage().ru_maxrss` growth, a lower bound). It is what the process really took,
    including the C allocator's slack and code paged in on the first call (about 10-15 MB), so it
    is larger and varies by some 15% from run to run for the small STT rows.
- Rows whose estimated peak exceeds --max-mem-gb are not run and print "n/a (reason)"; so does a row
  whose worker fails (for example, killed for memory).
- Model throughput: the two models are timed in alternation, repeat by repeat, so background load on
  the machine affects both alike; images/s = batch / median latency.

Usage:
    python scripts/benchmark_block.py              # full run, writes outputs/benchmark_block/
    python scripts/benchmark_block.py --quick      # smoke test: batch 2, few repeats
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

import stt_hf

# Timing, tensor-peak memory and reporting helpers are shared with `stt-hf bench`.
from stt_hf.experiments.benchmark import (
    MIN_REPEATS,  # noqa: F401  (part of this script's interface: its tests read it)
    budgeted_repeats,
    cpu_name,
    fmt,
    forward_with_tensor_peak,
    markdown_table,
    proc_kb,
    timed,
    timed_forward,
    write_csv,
)
from stt_hf.experiments.benchmark import estimate_peak_gb as estimate_block_gb
from stt_hf.layers import STT, create_attn
from stt_hf.models import SttResNet
from stt_hf.reporting.profiling import count_macs, count_params

# ---------------------------------------------------------------------------------------------------
# What is compared
# ---------------------------------------------------------------------------------------------------

# Block configurations: "C:HxW". The targets below refer to these.
DEFAULT_CONFIGS = ("256:28x28", "256:56x56", "128:112x112")
BASELINES = ("self_attn", "flat_dense", "flat_random")
MODULES = ("stt", *BASELINES)
MODELS = ("resnet50", "stt_resnet50")  # (reference, candidate)


@dataclass(frozen=True)
class Target:
    """One goal: `metric` of a block row (vs STT) or of the model pair must satisfy `op threshold`."""

    label: str
    metric: str  # block: "latency" / "peak_mem" (baseline / STT); models: a key of the stt_resnet50 row
    op: str  # ">=" or "<="
    threshold: float
    unit: str  # "x" for ratios, "%" for increases
    config: str | None = None  # block config, None for model-level targets
    baseline: str | None = None


TARGETS = (
    Target("STT faster than self-attention, 256:56x56", "latency", ">=", 5.0, "x", "256:56x56", "self_attn"),
    Target("STT less peak memory than self-attention, 256:56x56", "peak_mem", ">=", 5.0, "x", "256:56x56",
           "self_attn"),
    Target("STT faster than self-attention, 128:112x112", "latency", ">=", 20.0, "x", "128:112x112",
           "self_attn"),
    Target("stt_resnet50 params over resnet50", "params_increase", "<=", 15.0, "%"),
    Target("stt_resnet50 GMACs over resnet50", "gmacs_increase", "<=", 10.0, "%"),
    Target("stt_resnet50 throughput relative to resnet50", "throughput_ratio", ">=", 0.93, "x"),
    Target("stt_resnet50 training step speed relative to resnet50", "train_ratio", ">=", 0.90, "x"),
    # STT at the cost of its FLOPs: the block against its own two 1x1 convs + one BN, and those convs'
    # GMAC/s against the trunk's 1x1 conv at the same place (ResNet-50 stages 3 and 4, reduction 16).
    Target("STT block / its two 1x1 convs + BN, 1024:14x14", "block_vs_convs", "<=", 1.2, "x", "1024:14x14",
           "cost"),
    Target("STT block / its two 1x1 convs + BN, 2048:7x7", "block_vs_convs", "<=", 1.2, "x", "2048:7x7",
           "cost"),
    Target("trunk 1x1 conv GMAC/s / STT convs' GMAC/s, 1024:14x14", "trunk_vs_convs_gmacs", "<=", 1.3, "x",
           "1024:14x14", "cost"),
    Target("trunk 1x1 conv GMAC/s / STT convs' GMAC/s, 2048:7x7", "trunk_vs_convs_gmacs", "<=", 1.3, "x",
           "2048:7x7", "cost"),
)
# Where the cost targets look: ResNet-50 stage 3 (C=1024, 14x14) and 4 (C=2048, 7x7) at 224 px, with
# the registered models' STT options (reduction 16, 2 heads); the trunk conv is the stage's 1x1 expansion.
COST_CONFIGS = {"1024:14x14": (256, "layer3"), "2048:7x7": (512, "layer4")}
COST_REDUCTION = 16


def parse_config(text: str) -> tuple[int, int, int]:
    """'256:56x56' (or '256:56') -> (channels, H, W)."""
    channels, _, size = text.partition(":")
    h, _, w = size.partition("x")
    return int(channels), int(h), int(w or h)


def block_options(reduction: int) -> dict:
    """Options shared by every block: the same value channels Cv = C // reduction for all of them."""
    return dict(reduction=reduction)


def stt_defaults() -> dict:
    """STT's default options (what the STT rows use, apart from the shared reduction)."""
    skip = ("self", "channels", "feat_size", "device", "dtype")
    return {name: p.default for name, p in inspect.signature(STT.__init__).parameters.items()
            if name not in skip and p.default is not inspect.Parameter.empty}


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                   help="block configurations as C:HxW (default: %(default)s)")
    p.add_argument("--modules", nargs="+", default=list(MODULES), choices=MODULES,
                   help="block modules to compare (default: all; ratios need stt)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 8, 2 with --quick)")
    p.add_argument("--reduction", type=int, default=2,
                   help="value-channel reduction shared by all blocks (default: STT's, %(default)s)")
    p.add_argument("--img-size", type=int, default=224, help="model-level input size (default 224)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed forwards per row; the median is reported (default 10, 3 with --quick)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed forwards first, at least 1; the first also measures memory (default 1)")
    p.add_argument("--row-budget-s", type=float, default=20.0,
                   help="cap the repeats of a slow block row to about this many seconds (min 2 repeats)")
    p.add_argument("--model-repeats", type=int, default=None,
                   help="timed forwards per model, alternating (default 5, 3 with --quick)")
    p.add_argument("--max-mem-gb", type=float, default=None,
                   help="skip block rows whose estimated peak memory exceeds this "
                        "(default: 80%% of the memory available at start)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch intra-op threads (default: all cores, %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda also reports torch.cuda.max_memory_allocated as the peak memory")
    p.add_argument("--skip-models", action="store_true", help="block level only")
    p.add_argument("--skip-cost", action="store_true",
                   help="skip the STT-block-vs-its-convolutions rows (1024:14x14, 2048:7x7)")
    p.add_argument("--compile", action="store_true",
                   help="also time both models under torch.compile (inductor; minutes on a small CPU)")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 2, 3 repeats")
    p.add_argument("--out", type=Path, default=Path("outputs/benchmark_block"),
                   help="folder for blocks.csv, models.csv, targets.csv, results.json, table.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one block row (JSON spec)
    args = p.parse_args(argv)
    args.batch = args.batch or (2 if args.quick else 8)
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.model_repeats = args.model_repeats or (3 if args.quick else 5)
    if args.warmup < 1:
        p.error("--warmup must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    return args


# ---------------------------------------------------------------------------------------------------
# Process memory (timing and tensor-peak memory come from stt_hf.experiments.benchmark)
# ---------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------
# Block level
# ---------------------------------------------------------------------------------------------------

def block_static(module: str, config: str, batch: int, reduction: int) -> dict:
    """Parameters and FLOPs per image of one block, counted on the meta device (no memory, no compute)."""
    c, h, w = parse_config(config)
    block = create_attn(module, c, (h, w), **block_options(reduction), device="meta").eval()
    return dict(params=count_params(block), gflops=2 * count_macs(block, (c, h, w), batch) / batch / 1e9)


def estimate_peak_gb(module: str, config: str, batch: int, params: int) -> float:
    """Rough peak memory of a forward: N x N attention maps dominate the baselines."""
    return estimate_block_gb(module, *parse_config(config), batch, params)


def serve_block(spec: dict) -> None:
    """Worker side: build one block, then answer requests, one JSON line each, until "rss".

    "profile": one forward under the memory profiler -> seconds, tensor peak (the first warm-up pass);
    "forward": one timed forward -> seconds;  "rss": the process's peak RSS growth, then exit.
    """
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    c, h, w = parse_config(spec["config"])
    block = create_attn(spec["module"], c, (h, w), **block_options(spec["reduction"]), device=device).eval()
    x = torch.randn(spec["batch"], c, h, w, device=device)
    rss = RssPeak()  # baseline: block built, input allocated

    def reply(message: dict) -> None:
        print(json.dumps(message), flush=True)

    reply({"ready": True})
    for command in sys.stdin:
        with torch.inference_mode():
            if command.strip() == "profile":
                seconds, peak = forward_with_tensor_peak(block, x)
                reply({"seconds": seconds, "peak_mem_mb": peak / 2**20})
            elif command.strip() == "forward":
                reply({"seconds": timed_forward(block, x)})
            else:
                reply({"rss_mb": rss.peak_bytes() / 2**20, "rss_method": rss.method})
                return


class BlockWorker:
    """Parent side: one block row in its own Python process (this script with --worker)."""

    def __init__(self, spec: dict):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
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
        self.stderr.close()


def measure_config(config: str, args: argparse.Namespace, mem_limit_gb: float) -> list[dict]:
    """All block rows of one config: forwards interleaved module by module, each in its own worker.

    Interleaving puts every module's repeats in the same time window, so load changes on a shared
    machine hit them alike and the ratios to STT stay meaningful.
    """
    rows, workers = {}, {}
    for module in args.modules:
        rows[module] = dict(config=config, module=module, batch=args.batch,
                            **block_static(module, config, args.batch, args.reduction),
                            latency_ms=None, repeats=0, peak_mem_mb=None, rss_mb=None, rss_method="",
                            note="")
        estimate = estimate_peak_gb(module, config, args.batch, rows[module]["params"])
        if estimate > mem_limit_gb:
            rows[module]["note"] = f"est. {estimate:.1f} GB > limit {mem_limit_gb:.1f} GB"
            continue
        spec = dict(module=module, config=config, batch=args.batch, reduction=args.reduction,
                    threads=args.threads, device=args.device)
        workers[module] = BlockWorker(spec)  # workers start (import, build) in parallel

    def request(module: str, command: str | None = None) -> dict | None:
        """The worker's reply; None once it has failed (the row's note says why; the worker is dropped)."""
        if module not in workers:
            return None
        try:
            return workers[module].request(command)
        except RuntimeError as err:
            rows[module]["note"] = str(err)
            workers.pop(module).close()
            return None

    times: dict[str, list[float]] = {}
    repeats: dict[str, int] = {}
    try:
        for module in list(workers):  # wait until built, then warm up; the last pass sets the repeats
            request(module)
            warm = request(module, "profile")  # the first warm-up pass also measures the tensor peak
            if warm is not None:
                rows[module]["peak_mem_mb"] = warm["peak_mem_mb"]
            for _ in range(args.warmup - 1):
                warm = request(module, "forward")
            if module in workers:
                repeats[module] = budgeted_repeats(args.repeats, warm["seconds"], args.row_budget_s)
                times[module] = []
                print(f"  {config}: {module} warmed up, {warm['seconds']:.2f} s/forward, "
                      f"{repeats[module]} repeats", flush=True)
            else:
                print(f"  {config}: {module} failed: {rows[module]['note']}", flush=True)
        rounds = max(repeats.values(), default=0)
        for i in range(rounds):
            for module in list(workers):
                if i < repeats[module] and (reply := request(module, "forward")) is not None:
                    times[module].append(reply["seconds"])
            print(f"  {config}: repeat {i + 1}/{rounds}", flush=True)
        for module in list(workers):
            if (reply := request(module, "rss")) is not None and times[module]:
                rows[module].update(latency_ms=statistics.median(times[module]) * 1e3,
                                    repeats=len(times[module]), **reply)
    finally:
        for worker in workers.values():
            worker.close()
    return list(rows.values())


def memory_limit_gb(args: argparse.Namespace) -> tuple[float, str]:
    if args.max_mem_gb is not None:
        return args.max_mem_gb, "--max-mem-gb"
    try:
        available = proc_kb("/proc/meminfo", "MemAvailable") * 1024 / 2**30
    except (OSError, KeyError):
        return 8.0, "default"
    return 0.8 * available, "80% of available memory"


def run_blocks(args: argparse.Namespace, mem_limit_gb: float) -> list[dict]:
    rows = []
    total = len(args.configs) * len(args.modules)
    for config in args.configs:
        start = time.perf_counter()
        print(f"{config}: {', '.join(args.modules)}", flush=True)
        for row in measure_config(config, args, mem_limit_gb):
            rows.append(row)
            print(f"[{len(rows)}/{total}] {config:>12} {row['module']:<12} {describe_block_row(row)}",
                  flush=True)
        print(f"  {config}: {time.perf_counter() - start:.0f} s", flush=True)
    add_ratios_to_stt(rows)
    return rows


def describe_block_row(row: dict) -> str:
    if row["latency_ms"] is None:
        return f"n/a ({row['note']})"
    return (f"{row['latency_ms']:.1f} ms (median of {row['repeats']}), peak {row['peak_mem_mb']:.0f} MB, "
            f"RSS {row['rss_mb']:.0f} MB")


def add_ratios_to_stt(rows: list[dict]) -> None:
    """For each row: its value / the STT row's value at the same config (STT itself: 1.0)."""
    stt = {r["config"]: r for r in rows if r["module"] == "stt"}
    for row in rows:
        ref = stt.get(row["config"], {})
        for key, name in (("params", "params"), ("gflops", "flops"), ("latency_ms", "latency"),
                          ("peak_mem_mb", "peak_mem"), ("rss_mb", "rss")):
            value, base = row.get(key), ref.get(key)
            row[f"{name}_vs_stt"] = value / base if value and base else None


# ---------------------------------------------------------------------------------------------------
# Block cost: an STT block against its own convolutions
# ---------------------------------------------------------------------------------------------------

def count_ops(fn) -> int:
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


def run_block_cost(args: argparse.Namespace) -> list[dict]:
    """Per config: the STT block, its two 1x1 convs + BN alone, and the trunk's 1x1 conv, alternating."""
    rows = []
    for config, (trunk_in, _stage) in COST_CONFIGS.items():
        channels, h, w = parse_config(config)
        stt = STT(channels, feat_size=(h, w), reduction=COST_REDUCTION).eval()
        trunk = torch.nn.Conv2d(trunk_in, channels, 1, bias=False).eval()
        x = torch.randn(args.batch, channels, h, w)
        x_trunk = torch.randn(args.batch, trunk_in, h, w)
        cv = stt.to_v.out_channels
        fns = {
            "block": lambda stt=stt, x=x: stt(x),
            "convs": lambda stt=stt, x=x: stt.norm(stt.proj(stt.to_v(x))),
            "trunk": lambda trunk=trunk, x=x_trunk: trunk(x),
        }
        times = {k: [] for k in fns}
        with torch.inference_mode():
            for fn in fns.values():
                for _ in range(args.warmup):
                    fn()
            for _ in range(args.repeats * 3):  # small and fast: more repeats for a stable median
                for k, fn in fns.items():
                    start = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - start)
            ops = count_ops(fns["block"])
        med = {k: statistics.median(v) for k, v in times.items()}
        conv_macs = 2 * channels * cv * h * w * args.batch
        trunk_macs = trunk_in * channels * h * w * args.batch
        conv_gmacs_s, trunk_gmacs_s = conv_macs / med["convs"] / 1e9, trunk_macs / med["trunk"] / 1e9
        rows.append(dict(config=config, module="cost", batch=args.batch, block_ms=med["block"] * 1e3,
                         convs_ms=med["convs"] * 1e3, trunk_ms=med["trunk"] * 1e3, block_ops=ops,
                         convs_gmacs_s=conv_gmacs_s, trunk_gmacs_s=trunk_gmacs_s,
                         block_vs_convs=med["block"] / med["convs"],
                         trunk_vs_convs_gmacs=trunk_gmacs_s / conv_gmacs_s))
        print(f"  cost {config}: block {med['block'] * 1e3:.2f} ms, convs+BN {med['convs'] * 1e3:.2f} ms, "
              f"{ops} ops", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------
# Model level
# ---------------------------------------------------------------------------------------------------

def run_models(args: argparse.Namespace) -> list[dict]:
    """Params, GMACs/image and throughput of the model pair, timed in alternation."""
    device = torch.device(args.device)
    models, rows = {}, []
    for name in MODELS:
        kwargs = dict(img_size=args.img_size) if name.startswith("stt_") else {}
        models[name] = timm.create_model(name, pretrained=False, **kwargs).to(device).eval()
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    for name, model in models.items():
        rows.append(dict(model=name, batch=args.batch, img_size=args.img_size, params=count_params(model),
                         gmacs=count_macs(model, (3, args.img_size, args.img_size)) / 1e9))
    times = alternate({name: (lambda m=model: m(x)) for name, model in models.items()}, args, "inference",
                      inference=True)
    train = {name: train_step_fn(model, x) for name, model in models.items()}
    train_times = alternate(train, args, "training step")
    compiled = {}
    if args.compile:  # inductor, both models: code generation takes minutes on a small CPU
        compiled_models = {name: torch.compile(model) for name, model in models.items()}
        compiled = alternate({name: (lambda m=model: m(x)) for name, model in compiled_models.items()},
                             args, "inference, torch.compile", inference=True)
    for row in rows:
        median = statistics.median(times[row["model"]])
        train_median = statistics.median(train_times[row["model"]])
        row.update(latency_ms=median * 1e3, throughput=args.batch / median, repeats=args.model_repeats,
                   train_step_ms=train_median * 1e3, train_throughput=args.batch / train_median)
        if compiled:
            row["compiled_throughput"] = args.batch / statistics.median(compiled[row["model"]])
    ref = rows[0]
    for row in rows:
        row.update(params_increase=100 * (row["params"] / ref["params"] - 1),
                   gmacs_increase=100 * (row["gmacs"] / ref["gmacs"] - 1),
                   throughput_ratio=row["throughput"] / ref["throughput"],
                   train_ratio=row["train_throughput"] / ref["train_throughput"])
        if compiled:
            row["compiled_ratio"] = row["compiled_throughput"] / ref["compiled_throughput"]
    return rows


def train_step_fn(model: torch.nn.Module, x: torch.Tensor):
    """One SGD step (forward, cross-entropy, backward, update) on a copy of the model in training mode."""
    import copy

    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    target = torch.randint(0, model.num_classes, (x.shape[0],), device=x.device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), target).backward()
        optimizer.step()

    return step


def alternate(fns: dict, args: argparse.Namespace, what: str, inference: bool = False) -> dict[str, list]:
    """Seconds per call of each fn, called in alternation, repeat by repeat, after the warmup."""
    times = {name: [] for name in fns}
    with torch.inference_mode(inference):
        for fn in fns.values():
            for _ in range(args.warmup):
                fn()
        for i in range(args.model_repeats):
            for name, fn in fns.items():
                times[name].append(timed(fn, torch.device(args.device)))
            print(f"  models, {what}: repeat {i + 1}/{args.model_repeats}", flush=True)
    return times


# ---------------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------------

def check_targets(block_rows: list[dict], model_rows: list[dict]) -> list[dict]:
    results = []
    for t in TARGETS:
        if t.baseline == "cost":
            row = next((r for r in block_rows if r["config"] == t.config and r["module"] == "cost"), None)
            value = row.get(t.metric) if row else None
        elif t.config is not None:
            row = next((r for r in block_rows if r["config"] == t.config and r["module"] == t.baseline), None)
            value = row.get(f"{t.metric}_vs_stt") if row else None
        else:
            value = model_rows[-1][t.metric] if model_rows else None
        result = dict(target=t.label, required=f"{t.op} {t.threshold:g}{t.unit}", measured=value,
                      margin=None, status="n/a (not measured)")
        if value is not None:
            margin = value - t.threshold if t.op == ">=" else t.threshold - value
            result.update(margin=margin, status="PASS" if margin >= 0 else "MISS")
        result["unit"] = t.unit
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------

def render(meta: dict, block_rows: list[dict], model_rows: list[dict], targets: list[dict],
           cost_rows: list[dict] = ()) -> str:
    out = [f"## Benchmark ({meta['device']}, {meta['threads']} threads, torch {meta['torch']}, "
           f"timm {meta['timm']})", ""]
    if block_rows:
        out += [f"### Blocks, batch {meta['batch']}: ratios are module / STT at the same config", "",
                f"- STT options: {meta['stt_options']}",
                f"- baselines: same reduction (value channels C/{meta['reduction']}), heads=1, "
                f"flat_dense hidden={meta['stt_options_dict']['hidden']}",
                "- GFLOPs/img: matmuls and convs (FlopCounterMode); latency: median forward over n repeats",
                f"- peak MB: {meta['mem_method']}; RSS MB: process peak-RSS growth ({meta['rss_method']})",
                ""]
        table = []
        for r in block_rows:
            na = f"n/a ({r['note']})" if r["note"] else "n/a"
            table.append([r["config"], r["module"], f"{r['params'] / 1e6:.3f}M", f"{r['gflops']:.3f}",
                          fmt(r["latency_ms"], ".1f", missing=na), str(r["repeats"]),
                          fmt(r["peak_mem_mb"], ".0f", missing=na), fmt(r["rss_mb"], ".0f", missing=na),
                          fmt(r["params_vs_stt"], ".2f", "x"), fmt(r["flops_vs_stt"], ".2f", "x"),
                          fmt(r["latency_vs_stt"], ".2f", "x"), fmt(r["peak_mem_vs_stt"], ".2f", "x"),
                          fmt(r["rss_vs_stt"], ".2f", "x")])
        out += [markdown_table(["C:HxW", "module", "params", "GFLOPs/img", "latency ms", "n", "peak MB",
                                "RSS MB", "params/STT", "FLOPs/STT", "latency/STT", "memory/STT", "RSS/STT"],
                               table), ""]
    if cost_rows:
        out += [f"### STT block against its own convolutions, batch {meta['batch']}, eval, reduction "
                f"{COST_REDUCTION}", "",
                "- convs+BN: the block's two 1x1 convs and its BN alone; trunk: ResNet-50's 1x1 expansion "
                "conv at the same place", ""]
        table = [[r["config"], f"{r['block_ms']:.2f}", f"{r['convs_ms']:.2f}", f"{r['block_vs_convs']:.2f}x",
                  f"{r['convs_gmacs_s']:.1f}", f"{r['trunk_gmacs_s']:.1f}", str(r["block_ops"])]
                 for r in cost_rows]
        out += [markdown_table(["C:HxW", "block ms", "convs+BN ms", "block/convs", "convs GMAC/s",
                                "trunk GMAC/s", "block ops"], table), ""]
    if model_rows:
        compiled = "compiled_ratio" in model_rows[-1]
        out += [f"### Models, {meta['img_size']} px, batch {meta['batch']}: ratios vs {MODELS[0]}", "",
                f"- {MODELS[1]}: {meta['model_options']}",
                "- training step: SGD step (forward, cross-entropy, backward, update), training mode", ""]
        table = [[r["model"], f"{r['params'] / 1e6:.2f}M", f"{r['gmacs']:.3f}", f"{r['throughput']:.1f}",
                  str(r["repeats"]), f"{r['params_increase']:+.1f}%", f"{r['gmacs_increase']:+.1f}%",
                  f"{r['throughput_ratio']:.3f}x", f"{r['train_ratio']:.3f}x"]
                 + ([f"{r['compiled_ratio']:.3f}x"] if compiled else []) for r in model_rows]
        out += [markdown_table(["model", "params", "GMACs/img", "img/s", "n", "params +", "GMACs +",
                                "throughput ratio", "train step ratio"]
                               + (["compiled ratio"] if compiled else []), table), ""]
    out += ["### Targets", ""]
    table = [[t["target"], fmt(t["measured"], ".2f", t["unit"]), t["required"],
              fmt(t["margin"], "+.2f", t["unit"]), t["status"]] for t in targets]
    out += [markdown_table(["target", "measured", "required", "margin", "result"], table)]
    return "\n".join(out)


def write_outputs(out: Path, meta: dict, block_rows: list[dict], model_rows: list[dict],
                  targets: list[dict], table: str, cost_rows: list[dict] = ()) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "blocks.csv", block_rows)
    if cost_rows:
        write_csv(out / "cost.csv", list(cost_rows))
    write_csv(out / "models.csv", model_rows)
    write_csv(out / "targets.csv", targets)
    results = dict(meta=meta, blocks=block_rows, models=model_rows, targets=targets, cost=list(cost_rows))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(table + "\n")


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------

def model_options() -> str:
    """The candidate model's attention defaults, read from its signature."""
    defaults = {name: p.default for name, p in inspect.signature(SttResNet.__init__).parameters.items()}
    keys = ("attn_layer", "attn_placement", "attn_stages", "stt_synth", "stt_heads", "stt_reduction")
    return "registered defaults: " + ", ".join(f"{k}={defaults[k]}" for k in keys)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.worker:  # internal: one block row in this fresh process
        serve_block(json.loads(args.worker))
        return {}

    torch.set_num_threads(args.threads)
    mem_limit, mem_limit_source = memory_limit_gb(args)
    options = stt_defaults() | block_options(args.reduction)
    meta = dict(
        command=" ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(argv),
        device=torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
        threads=args.threads, cpu_count=os.cpu_count(), torch=torch.__version__, timm=timm.__version__,
        stt_hf=stt_hf.__version__, python=platform.python_version(), batch=args.batch,
        img_size=args.img_size, reduction=args.reduction, repeats=args.repeats, warmup=args.warmup,
        row_budget_s=args.row_budget_s, model_repeats=args.model_repeats,
        max_mem_gb=round(mem_limit, 2), max_mem_source=mem_limit_source,
        stt_options=", ".join(f"{k}={v}" for k, v in options.items()), stt_options_dict=options,
        model_options=model_options(),
        mem_method=("torch.cuda.max_memory_allocated growth" if args.device == "cuda" else
                    "peak bytes of live tensors in one forward (torch.profiler, profile_memory=True)"),
        rss_method="", date=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    print(f"Block rows: {len(args.configs) * len(args.modules)}, batch {args.batch}, {args.threads} threads, "
          f"memory limit {mem_limit:.1f} GB ({mem_limit_source})", flush=True)
    block_rows = run_blocks(args, mem_limit)
    meta["rss_method"] = next((r["rss_method"] for r in block_rows if r["rss_method"]), "n/a")
    cost_rows = [] if args.skip_cost else run_block_cost(args)
    model_rows = [] if args.skip_models else run_models(args)
    targets = check_targets(block_rows + cost_rows, model_rows)

    table = render(meta, block_rows, model_rows, targets, cost_rows)
    print("\n" + table, flush=True)
    write_outputs(args.out, meta, block_rows, model_rows, targets, table, cost_rows)
    print(f"\nWrote {args.out}/blocks.csv, models.csv, targets.csv, results.json, table.md", flush=True)
    return dict(meta=meta, blocks=block_rows, models=model_rows, targets=targets, cost=cost_rows)


if __name__ == "__main__":
    main()
