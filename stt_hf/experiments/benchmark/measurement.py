"""Measuring one call: its time, its peak tensor memory, the process's peak RSS, a memory estimate."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import torch
from torch.profiler import ProfilerActivity, profile

from .spec import AXIAL, QUADRATIC


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
    axial and criss-cross attention the same along rows and columns, (B, N, H + W); the others hold a
    few copies of the feature map. A backward about doubles both, and adds the
    parameter gradients.
    """
    feature_map = batch * channels * height * width * 4
    if module in QUADRATIC:
        activations = 2 * batch * (height * width) ** 2 * 4 + 4 * feature_map
    elif module in AXIAL:
        activations = 2 * batch * height * width * (height + width) * 4 + 6 * feature_map
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
