"""Whole models against a reference (resnet50): inference and a training step timed in alternation,
paired speed ratios with a bootstrap interval."""

from __future__ import annotations

import argparse
import ast
import copy
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ...reporting.profiling import count_macs, count_params
from .measurement import autocast, tensor_peak, timed
from .spec import CAPACITY_CONTROL, MODEL_COLUMNS


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
    """One model while it is measured: its calls (inference, training step, fused and compiled inference)."""

    row: dict
    infer: Callable[[], None]
    train_step: Callable[[], None]
    fused_infer: Callable[[], None] | None = None
    compiled_infer: Callable[[], None] | None = None
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def fused_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy after the model's own fuse_for_inference() (STT models fold each attention
    block's output BatchNorm; a model without the method, such as timm's resnet50, is copied as is)."""
    fused = copy.deepcopy(model).eval()
    return fused.fuse_for_inference() if hasattr(fused, "fuse_for_inference") else fused


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
    fused = inference(fused_copy(model)) if args.fused else None
    compiled = inference(torch.compile(model, backend=args.compile)) if args.compile else None
    return ModelCase(row, inference(model), train_step, fused, compiled)


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
        for _ in range(args.warmup if case.fused_infer else 0):
            case.fused_infer()
        for _ in range(args.warmup if case.compiled_infer else 0):  # the first compiles
            case.compiled_infer()
        case.row.update(peak_infer_mb=peak_infer / 2**20, peak_train_mb=peak_train / 2**20)
        cases.append(case)
        print(f"models: {device.type} {name} ready at {case.row['img_size']} px "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    for i in range(args.model_repeats):
        for kind in ("infer", "train_step", "fused_infer", "compiled_infer"):
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
        for kind in ("fused_infer", "compiled_infer"):
            if kind in med:
                case.row.update({f"{kind}_ms": med[kind] * 1e3,
                                 f"{kind}_img_s": args.infer_batch / med[kind]})
        rows.append(case.row)
    ref, ref_times = rows[0], cases[0].times
    for row, case in zip(rows, cases, strict=True):
        infer = paired_ratio(ref_times["infer"], case.times["infer"])
        train = paired_ratio(ref_times["train_step"], case.times["train_step"])
        row.update(params_vs_ref=row["params"] / ref["params"], gmacs_vs_ref=row["gmacs"] / ref["gmacs"],
                   infer_speed_vs_ref=infer[0], infer_speed_ci_low=infer[1], infer_speed_ci_high=infer[2],
                   train_speed_vs_ref=train[0], train_speed_ci_low=train[1], train_speed_ci_high=train[2])
        for mode in ("fused", "compiled"):
            if row[f"{mode}_infer_img_s"] is not None:
                row[f"{mode}_speed_vs_ref"] = paired_ratio(ref_times[f"{mode}_infer"],
                                                           case.times[f"{mode}_infer"])[0]
    add_control_ratios(rows, cases)
    return rows


def add_control_ratios(rows: list[dict], cases: list[ModelCase]) -> None:
    """The STT model against the capacity control (a plain block of its size at its places) in each
    inference mode: the control's time / the model's, paired by round, with a bootstrap interval."""
    control = next((c for c in cases if c.row["model"] == CAPACITY_CONTROL), None)
    if control is None:
        return
    for row, case in zip(rows, cases, strict=True):
        for mode, kind in (("infer", "infer"), ("fused", "fused_infer"), ("compiled", "compiled_infer")):
            if case.times.get(kind) and control.times.get(kind):
                median, low, high = paired_ratio(control.times[kind], case.times[kind])
                row.update({f"{mode}_speed_vs_control": median, f"{mode}_speed_vs_control_ci_low": low,
                            f"{mode}_speed_vs_control_ci_high": high})
