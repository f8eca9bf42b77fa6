"""One block row in its own Python process: the worker's side (`serve_block`) and the parent's
(`BlockWorker`), speaking JSON lines over stdin / stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import torch
from torch import nn

from ...layers.create import create_attn
from ...reporting.profiling import count_macs, count_params
from .measurement import RssPeak, autocast, tensor_peak, timed
from .spec import STT_VARIANTS


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


WORKER_MODULE = "stt_hf.experiments.benchmark"  # its __main__ serves a block given --worker SPEC


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
