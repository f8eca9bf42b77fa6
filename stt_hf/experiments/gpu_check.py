"""One-command GPU check (`bash scripts/gpu_check.sh`): what STT costs on a GPU, in at most ~8 minutes.

Measured on one CUDA device, bf16 autocast, channels_last, random-init models (nothing downloaded):

1. Blocks: STT against dot-product self-attention (and axial attention where `stt_hf.layers.create`
   has it) on (B, C, S, S) maps at S = 56, 112, 224: forward latency and peak tensor memory.
   A row whose N x N maps would not fit in 80% of the free device memory is skipped, one that runs
   out of memory is marked so.
2. The main job's recipe (`stt-hf train` defaults) for --train_steps steps (200), with its wall time.
3. Models: stt_resnet50, resnet50, the capacity control (`stt_resnet50:attn_layer=res_block`) and
   seresnet50 at 224 px: inference and training-step throughput (forward, cross-entropy, backward,
   SGD step) at batch 32 and 128, in eager mode, under torch.compile (inductor), and under
   torch.compile with CUDA graphs (mode="reduce-overhead"). The batch dimension is marked dynamic, so
   one compilation serves both batch sizes. Compiling takes most of the time: the compiled modes run
   while --budget_s allows, and what is left is marked `skipped (time budget)`.

Latency and throughput come from `torch.utils.benchmark.Timer.blocked_autorange` (it synchronises
CUDA). Results print as they come and are written to --out: results.json and results.md.

`--dry_run` runs the same code on the CPU at toy sizes (models at 32 px, batch 2 and 3, blocks at 8
and 16 px, a 2-step training run on mnist_5k, torch.compile with the `eager` backend, CUDA graphs
skipped): the test suite runs it, so the check cannot rot while no GPU is at hand.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from ..layers.create import ATTN_FACTORIES, create_attn
from .benchmark.measurement import estimate_peak_gb, tensor_peak
from .benchmark.models import create_model
from .benchmark.spec import CAPACITY_CONTROL

MODELS = ("stt_resnet50", "resnet50", CAPACITY_CONTROL, "seresnet50")
MODES = ("eager", "compiled", "cudagraphs")
BLOCK_MODULES = tuple(m for m in ("stt", "self_attn", "axial") if m in ATTN_FACTORIES)

PRESETS = {
    "gpu": dict(img_size=224, batches=[32, 128], block_sizes=[56, 112, 224], block_channels=64,
                block_batch=8, train_steps=200, train_dataset="fashion_mnist", compile_backend="inductor",
                min_run_time=1.0, budget_s=480.0),
    "dry_run": dict(img_size=32, batches=[2, 3], block_sizes=[8, 16], block_channels=16, block_batch=2,
                    train_steps=2, train_dataset="mnist_5k", compile_backend="eager", min_run_time=0.01,
                    budget_s=86400.0),  # no budget: the dry run checks that every row runs
}
# Kept for the compiled model rows: the blocks and the training run before them need about this long.
RESERVE_S = {"gpu": 90.0, "dry_run": 0.0}


def median_seconds(fn: Callable[[], object], min_run_time: float) -> float:
    """Median seconds of one call, after one untimed call (torch.utils.benchmark synchronises CUDA)."""
    fn()
    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


# ----------------------------------------------------------------------------------------------- blocks

def block_rows(cfg: dict, device: torch.device) -> list[dict]:
    """Forward latency and peak tensor memory of each attention block at each size."""
    rows = []
    c, b = cfg["block_channels"], cfg["block_batch"]
    free = torch.cuda.mem_get_info(device)[0] / 2**30 if device.type == "cuda" else 8.0
    for size in cfg["block_sizes"]:
        for module in BLOCK_MODULES:
            row = dict(module=module, channels=c, size=size, batch=b, fwd_ms=None, peak_mb=None, status="ok")
            block = create_attn(module, c, (size, size), device=device).eval()
            params = sum(p.numel() for p in block.parameters())
            # float32 estimate; bf16 halves it, so this leaves room
            if estimate_peak_gb(module, c, size, size, b, params) > 0.8 * free:
                row["status"] = "skipped (memory)"
            else:
                x = torch.randn(b, c, size, size, device=device).to(memory_format=torch.channels_last)

                def forward(block=block, x=x):
                    with torch.inference_mode(), autocast(device):
                        block(x)
                try:
                    _, peak = tensor_peak(forward, device)
                    seconds = median_seconds(forward, cfg["min_run_time"])
                    row.update(fwd_ms=seconds * 1e3, peak_mb=peak / 2**20)
                except torch.OutOfMemoryError:
                    row["status"] = "out of memory"
            rows.append(row)
            print(f"block {module} {c}:{size}x{size} B={b}: {row['status']}"
                  + (f", {row['fwd_ms']:.3f} ms, peak {row['peak_mb']:.1f} MB" if row["fwd_ms"] else ""),
                  flush=True)
            del block
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------ training run

def training_run(cfg: dict, out: Path) -> dict:
    """The main job's recipe for cfg['train_steps'] steps; its wall time, from start to saved model."""
    from ..tasks import train

    argv = ["--dataset", cfg["train_dataset"], "--max_steps", str(cfg["train_steps"]), "--output_dir",
            str(out / "main_job"), "--disable_tqdm", "true", "--logging_steps", "50"]
    if cfg["train_steps"] < 10:  # the dry run: a few samples, no warm-up
        argv += ["--max_train_samples", "64", "--max_eval_samples", "32",
                 "--per_device_train_batch_size", "16", "--warmup_steps", "0"]
    start = time.perf_counter()
    results = train.main(argv)
    seconds = time.perf_counter() - start
    row = dict(dataset=cfg["train_dataset"], steps=results.get("global_step", cfg["train_steps"]),
               seconds=seconds, train_runtime_s=results.get("train", {}).get("train_runtime"),
               test_accuracy=results.get("metrics", {}).get("accuracy"))
    print(f"training run: {row['steps']} steps on {row['dataset']} in {seconds:.1f} s "
          f"(the Trainer's train_runtime {row['train_runtime_s']} s)", flush=True)
    return row


# ----------------------------------------------------------------------------------------------- models

def model_calls(spec: str, mode: str, cfg: dict, device: torch.device):
    """(inference, training step) closures of a fresh model taking a batch-size argument."""
    model = create_model(spec, cfg["img_size"]).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    net = model
    if mode != "eager":
        options = dict(mode="reduce-overhead") if mode == "cudagraphs" else {}
        net = torch.compile(model, backend=cfg["compile_backend"], **options)
    inputs = {}

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if n not in inputs:
            x = torch.randn(n, 3, cfg["img_size"], cfg["img_size"], device=device)
            x = x.to(memory_format=torch.channels_last)
            torch._dynamo.mark_dynamic(x, 0)  # one compilation for every batch size
            inputs[n] = x, torch.randint(0, model.num_classes, (n,), device=device)
        return inputs[n]

    def infer(n: int) -> None:
        x, _ = batch(n)
        model.eval()
        if mode == "cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode(), autocast(device):
            net(x)

    def train_step(n: int) -> None:
        x, y = batch(n)
        model.train()
        if mode == "cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()

    return infer, train_step


def model_rows(cfg: dict, device: torch.device, deadline: float) -> list[dict]:
    """Inference and training throughput of each model in each mode and batch size (eager first)."""
    rows = []
    for mode in MODES:
        for spec in MODELS:
            base = dict(model=spec, mode=mode, img_size=cfg["img_size"])
            if mode == "cudagraphs" and device.type != "cuda":
                rows += [dict(base, batch=n, status="skipped (needs CUDA)") for n in cfg["batches"]]
                continue
            if mode != "eager" and time.perf_counter() > deadline:
                rows += [dict(base, batch=n, status="skipped (time budget)") for n in cfg["batches"]]
                continue
            start = time.perf_counter()
            infer, train_step = model_calls(spec, mode, cfg, device)
            for n in cfg["batches"]:
                row = dict(base, batch=n, status="ok")
                try:
                    t_infer = median_seconds(lambda n=n, f=infer: f(n), cfg["min_run_time"])
                    t_train = median_seconds(lambda n=n, f=train_step: f(n), cfg["min_run_time"])
                    row.update(infer_img_s=n / t_infer, train_img_s=n / t_train)
                except torch.OutOfMemoryError:
                    row["status"] = "out of memory"
                rows.append(row)
                said = (f"infer {row['infer_img_s']:.1f} img/s, train {row['train_img_s']:.1f} img/s"
                        if row["status"] == "ok" else row["status"])
                print(f"model {spec} {mode} B={n}: {said}", flush=True)
            rows[-1]["setup_s"] = time.perf_counter() - start  # compile + warm-up + timing of both batches
            del infer, train_step
            torch._dynamo.reset()  # each compiled model starts clean; frees its graphs
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------- report

def fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def render(result: dict) -> str:
    """results.md: the settings, then models, blocks and the training run."""
    meta = result["meta"]
    lines = ["# GPU check", "", f"`{meta['command']}` on {meta['device_name']}, torch {meta['torch']}, "
             f"{meta['date']}, {meta['seconds']:.0f} s in all.", "",
             "## Models (bf16 autocast, channels_last)", "",
             "| model | mode | batch | inference img/s | training img/s | status |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['mode']} | {r['batch']} | {fmt(r.get('infer_img_s'), '.1f')} | "
              f"{fmt(r.get('train_img_s'), '.1f')} | {r['status']} |" for r in result["models"]]
    lines += ["", "## Blocks (forward, bf16 autocast)", "",
              "| module | C:SxS | batch | forward ms | peak MB | status |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['module']} | {r['channels']}:{r['size']}x{r['size']} | {r['batch']} | "
              f"{fmt(r['fwd_ms'], '.3f')} | {fmt(r['peak_mb'], '.1f')} | {r['status']} |"
              for r in result["blocks"]]
    t = result["training"]
    lines += ["", "## Training run (the main job's recipe)", "",
              f"{t['steps']} steps on {t['dataset']}: {t['seconds']:.1f} s from start to saved model "
              f"(training loop {t['train_runtime_s']} s)"
              + (f", test accuracy {t['test_accuracy']:.4f}" if t.get("test_accuracy") is not None else "")
              + "."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
    preset = "dry_run" if args.dry_run else "gpu"
    cfg = dict(PRESETS[preset])
    if args.train_steps is not None:
        cfg["train_steps"] = args.train_steps
    if args.budget_s is not None:
        cfg["budget_s"] = args.budget_s
    if not args.dry_run and not torch.cuda.is_available():
        raise RuntimeError("the GPU check needs a CUDA device (none is visible); "
                           "--dry_run runs it on the CPU")
    device = torch.device("cuda" if not args.dry_run else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    deadline = started + cfg["budget_s"] - RESERVE_S[preset]
    command = "bash scripts/gpu_check.sh" + (" --dry_run" if args.dry_run else "")
    blocks = block_rows(cfg, device)
    training = training_run(cfg, out)
    models = model_rows(cfg, device, deadline)
    meta = dict(command=command, preset=preset, device_name=torch.cuda.get_device_name(device)
                if device.type == "cuda" else "CPU", torch=torch.__version__, timm=timm.__version__,
                date=time.strftime("%Y-%m-%d %H:%M"), seconds=time.perf_counter() - started, **cfg)
    result = dict(meta=meta, models=models, blocks=blocks, training=training)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(render(result))
    print(render(result), flush=True)
    print(f"written: {out / 'results.json'}, {out / 'results.md'}", flush=True)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bash scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry_run", action="store_true", help="toy sizes on the CPU (what the test suite runs)")
    p.add_argument("--out", default="outputs/gpu_check", help="results folder (default %(default)s)")
    p.add_argument("--train_steps", type=int, help="steps of the training run (default 200; dry run 2)")
    p.add_argument("--budget_s", type=float, help="seconds the whole check may take, roughly (default 480)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
