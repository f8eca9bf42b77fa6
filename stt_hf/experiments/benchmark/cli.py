"""`stt-hf bench` and `python scripts/benchmark.py`: the options, their presets and checks, and the run."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import timm
import torch

from .blocks import grid_points, run_blocks
from .cost import run_cost
from .measurement import memory_cap_gb
from .models import parse_model_spec, run_models
from .report import cpu_name, device_label, interval, render_targets, write_outputs
from .scaling import scaling_fits
from .spec import ALL_BLOCK_MODULES, COST_CONFIGS, DEFAULT_MODELS, PRESETS, REFERENCE_MODEL, config_name
from .targets import check_targets
from .worker import serve_block

DESCRIPTION = ("Benchmark STT against attention baselines: blocks, scaling with N = H*W, block cost, models, "
               "targets.")


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
                   help="block modules (grid, quick: all but flat_random; targets: stt_dense, the N x N "
                        "baselines, axial and criss_cross)")
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
                        "of code generation on a small CPU; targets: inductor; 'none': off)")
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                   help="also time model inference after the model's fuse_for_inference() (targets: yes)")
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
    args.compile = None if args.compile == "none" else args.compile
    args.fused = bool(args.fused)
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
    parts += ["--fused"] if args.fused else []
    return " ".join(parts)


def check_out_folder(out: Path) -> None:
    """--out must be a folder, or a path where one can be made: checked before minutes of measuring."""
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out}: is a file; expected a folder for the benchmark's outputs")
        return
    ancestor = next(p for p in out.absolute().parents if p.exists())
    if not ancestor.is_dir():
        raise ValueError(f"--out {out}: {ancestor} is a file; expected a folder path")
    if not os.access(ancestor, os.W_OK):
        raise ValueError(f"--out {out}: cannot be created, {ancestor} is not writable")


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark described by parsed options; returns dict(meta=..., sections=[...])."""
    args = resolve_args(args)
    check_out_folder(args.out)
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
                                               "reference", "compile", "fused")})
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
    """`stt-hf bench`. A bad option raises ValueError before anything is measured or written; `stt-hf`
    reports it the way it reports every command's errors (one line, exit code 2)."""
    run(args)
    return 0


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `bench` command to an argparse subparsers object (for `stt-hf bench`)."""
    parser = subparsers.add_parser("bench", help="benchmark STT blocks and models against baselines",
                                   description=DESCRIPTION)
    add_arguments(parser).set_defaults(func=run_command)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """`python scripts/benchmark.py [options]`: parse, run, return the results.

    `--worker SPEC` (internal, how the block rows run in their own processes): serve one block.
    """
    parser = argparse.ArgumentParser(prog="benchmark", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = add_arguments(parser).parse_args(argv)
    if args.worker:
        serve_block(json.loads(args.worker))
        return {}
    return run(args)

