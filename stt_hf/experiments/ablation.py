"""The paper's comparison, reproduced small: one recipe, many attention modules, several seeds.

Every variant is the same small ResNet (`stt_resnet10_s` body) with a different attention module,
trained with one plain PyTorch recipe on in-memory tensors, then scored on the clean test set and
under corruptions (Gaussian noise, rotation, center crop). Runs append to `runs.jsonl`, so an
interrupted job resumes where it stopped; `report` turns the runs into CSV, Markdown and plots.

    python scripts/ablation.py --config scripts/configs/ablation_cpu.yaml      # train + report
    python scripts/ablation.py --config ... --report_only                      # tables and plots
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .runs import append_row, check_known, read_runs, run_and_report, summarize, write_report

# Where attention goes unless a variant says otherwise: in the blocks of stages 3 and 4. Set here, not
# taken from the registered model, so the ablation measures the same thing whatever the defaults are.
BASE_KWARGS = dict(attn_placement="block", attn_stages=(3, 4))

# name -> SttResNet keyword arguments on top of BASE_KWARGS.
VARIANTS: dict[str, dict] = {
    "plain": dict(attn_layer="none"),
    "se": dict(attn_layer="se"),
    "eca": dict(attn_layer="eca"),
    "cbam": dict(attn_layer="cbam"),
    "self_attn": dict(attn_layer="self_attn"),
    "flat_dense": dict(attn_layer="flat_dense"),
    "flat_random": dict(attn_layer="flat_random"),
    "stt_dense": dict(attn_layer="stt"),
    "stt_random": dict(attn_layer="stt", stt_synth="random"),
    "stt_fixed_random": dict(attn_layer="stt", stt_synth="random", stt_fixed=True),
    "stt_factorized_random": dict(attn_layer="stt", stt_synth="factorized_random"),
    "stt_mixture": dict(attn_layer="stt", stt_synth="mixture"),
    "stt_c": dict(attn_layer="stt", stt_modes="c"),
    "stt_h": dict(attn_layer="stt", stt_modes="h"),
    "stt_w": dict(attn_layer="stt", stt_modes="w"),
    "stt_hw": dict(attn_layer="stt", stt_modes="hw"),
    "stt_stage": dict(attn_layer="stt", attn_placement="stage"),
    "stt_final": dict(attn_layer="stt", attn_placement="final"),
}

# Corruptions of the test set: name -> (kind, strength).
CORRUPTIONS: dict[str, tuple[str, float]] = {
    "noise_0.05": ("noise", 0.05),
    "noise_0.1": ("noise", 0.1),
    "noise_0.2": ("noise", 0.2),
    "rotate_15": ("rotate", 15.0),
    "rotate_30": ("rotate", 30.0),
    "crop_90": ("crop", 0.9),
    "crop_80": ("crop", 0.8),
    "crop_70": ("crop", 0.7),
}


@dataclass
class AblationConfig:
    """One recipe for every variant. `datasets` maps a built-in dataset to its train/test row limits."""

    out_dir: str = "outputs/ablation"
    model: str = "stt_resnet10_s"
    model_kwargs: dict = field(default_factory=lambda: dict(channels=[8, 16, 32, 64]))
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    datasets: dict = field(default_factory=lambda: {
        "fashion_mnist": dict(train=4000, test=1000), "mnist_5k": dict(train=None, test=None)})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 3
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    workers: int = 1
    device: str = "cpu"


# ------------------------------------------------------------------------------------------- data


def load_tensors(dataset: str, train: int | None, test: int | None) -> dict[str, tuple]:
    """{"train"/"test": (images float (N, 1, 28, 28) in [0, 1], labels long)}; subsets fixed by seed 0."""
    from ..data.classification import read_fashion_mnist, read_mnist_5k

    # Fashion-MNIST from the Debian package only (FileNotFoundError names it), never from the Hub.
    arrays = {"fashion_mnist": read_fashion_mnist, "mnist_5k": read_mnist_5k}[dataset]()
    out = {}
    for split, limit in (("train", train), ("test", test)):
        x, y = arrays[split]
        keep = np.arange(len(y))
        if limit is not None and limit < len(y):
            keep = np.sort(np.random.default_rng(0).permutation(len(y))[:limit])
        images = torch.from_numpy(x[keep]).float().div_(255).unsqueeze(1)
        out[split] = (images, torch.from_numpy(y[keep].astype(np.int64)))
    return out


def corrupt(images: torch.Tensor, kind: str, strength: float, seed: int = 0) -> torch.Tensor:
    """A corrupted copy of (N, C, H, W) images in [0, 1]."""
    import torchvision.transforms.functional as TF

    if kind == "noise":
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
        return (images + strength * noise).clamp_(0, 1)
    if kind == "rotate":
        return TF.rotate(images, strength, interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)
    if kind == "crop":
        size = images.shape[-2:]
        crop = [max(1, round(s * strength)) for s in size]
        return TF.resize(TF.center_crop(images, crop), list(size), antialias=True)
    raise ValueError(f"unknown corruption {kind!r}; expected noise, rotate or crop")


def normalize(images: torch.Tensor) -> torch.Tensor:
    return (images - 0.5) / 0.5


# ------------------------------------------------------------------------------------ one run


def build_model(config: AblationConfig, variant: str, num_classes: int):
    import timm

    import stt_hf  # noqa: F401  (registers the models)

    kwargs = {**BASE_KWARGS, **config.model_kwargs, **VARIANTS[variant]}
    return timm.create_model(config.model, num_classes=num_classes, in_chans=1, img_size=28, **kwargs)


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor, device: str, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = model(normalize(images[i:i + batch_size]).to(device))
        correct += (logits.argmax(-1).cpu() == labels[i:i + batch_size]).sum().item()
    return correct / len(labels)


def train_one(config: AblationConfig, variant: str, dataset: str, seed: int,
              threads: int | None = None) -> dict:
    """Train one (variant, dataset, seed) and score it clean and under every corruption."""
    from ..reporting.profiling import count_macs, count_params

    if threads:
        torch.set_num_threads(threads)
    data = load_tensors(dataset, **config.datasets[dataset])
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    torch.manual_seed(seed)
    model = build_model(config, variant, num_classes=10).to(config.device)
    params = count_params(model)
    macs = count_macs(model, (1, 28, 28))

    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup_fraction * total))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total - warmup))))))
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(y_train), generator=generator)
        for i in range(0, len(order), config.batch_size):
            idx = order[i:i + config.batch_size]
            logits = model(normalize(x_train[idx]).to(config.device))
            loss = F.cross_entropy(logits, y_train[idx].to(config.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    train_s = time.perf_counter() - start

    row = dict(variant=variant, dataset=dataset, seed=seed, params=params, macs=macs,
               train_s=round(train_s, 1), final_loss=round(loss.item(), 4),
               acc=accuracy(model, x_test, y_test, config.device))
    for name, (kind, strength) in CORRUPTIONS.items():
        row[name] = accuracy(model, corrupt(x_test, kind, strength), y_test, config.device)
    return row


# --------------------------------------------------------------------------------------- driver


def _key(row: dict) -> tuple:
    return row["variant"], row["dataset"], row["seed"]


def run(config: AblationConfig) -> list[dict]:
    """Train every (variant, dataset, seed) not yet in runs.jsonl; return all runs."""
    check_known(config.variants, VARIANTS)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    runs_path = out / "runs.jsonl"
    done = {_key(r) for r in read_runs(runs_path)}
    todo = [(v, d, s) for d in config.datasets for v in config.variants for s in config.seeds
            if (v, d, s) not in done]
    print(f"ablation: {len(done)} runs done, {len(todo)} to go, {config.workers} worker(s)", flush=True)
    threads = max(1, (os.cpu_count() or 1) // config.workers)
    start = time.perf_counter()

    def record(i: int, row: dict) -> None:
        append_row(runs_path, row)
        elapsed = time.perf_counter() - start
        eta = elapsed / i * (len(todo) - i)
        print(f"[{i}/{len(todo)}] {row['dataset']:13s} {row['variant']:22s} seed {row['seed']}  "
              f"acc {row['acc']:.4f}  train {row['train_s']:.0f}s  (eta {eta / 60:.0f} min)", flush=True)

    if config.workers <= 1:
        for i, job in enumerate(todo, 1):
            record(i, train_one(config, *job))
    else:
        with ProcessPoolExecutor(config.workers) as pool:
            futures = [pool.submit(train_one, config, *job, threads) for job in todo]
            for i, future in enumerate(as_completed(futures), 1):
                record(i, future.result())
    return read_runs(runs_path)


# --------------------------------------------------------------------------------------- report


def summarize_runs(runs: list[dict]) -> list[dict]:
    """Mean and sample std over seeds of the clean and corrupted accuracies, per (dataset, variant)."""
    return summarize(runs, VARIANTS, metrics=("acc", *CORRUPTIONS))


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown(summary: list[dict]) -> str:
    datasets = sorted({r["dataset"] for r in summary})
    lines = ["### Accuracy (%; mean ± std over seeds)", "",
             "| variant | params (M) | MMACs | " + " | ".join(datasets) + " |",
             "|---|---:|---:|" + "---:|" * len(datasets)]
    by_key = {(r["dataset"], r["variant"]): r for r in summary}
    variants = [v for v in VARIANTS if any((d, v) in by_key for d in datasets)]
    for v in variants:
        first = next(by_key[(d, v)] for d in datasets if (d, v) in by_key)
        cells = [_pct(by_key[(d, v)]["acc"], by_key[(d, v)]["acc_std"]) if (d, v) in by_key else "-"
                 for d in datasets]
        lines.append(f"| {v} | {first['params'] / 1e6:.3f} | {first['macs'] / 1e6:.1f} | "
                     + " | ".join(cells) + " |")
    for d in datasets:
        lines += ["", f"### Robustness on {d} (accuracy %, mean over seeds)", "",
                  "| variant | clean | " + " | ".join(CORRUPTIONS) + " |",
                  "|---|---:|" + "---:|" * len(CORRUPTIONS)]
        for v in variants:
            if (d, v) in by_key:
                r = by_key[(d, v)]
                lines.append(f"| {v} | {100 * r['acc']:.2f} | "
                             + " | ".join(f"{100 * r[c]:.2f}" for c in CORRUPTIONS) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], out: Path) -> list[Path]:
    from ..plotting import pyplot

    plt = pyplot()

    datasets = sorted({r["dataset"] for r in summary})
    paths = []
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 5), squeeze=False)
    for ax, d in zip(axes[0], datasets, strict=True):
        rows = [r for r in summary if r["dataset"] == d]
        colors = ["tab:orange" if r["variant"].startswith("stt") else "tab:blue" for r in rows]
        ax.barh([r["variant"] for r in rows], [100 * r["acc"] for r in rows],
                xerr=[100 * r["acc_std"] for r in rows], color=colors)
        low = min(100 * r["acc"] - 100 * r["acc_std"] for r in rows)
        ax.set_xlim(max(0, low - 1), 100)
        ax.invert_yaxis()
        ax.set_title(f"{d}: test accuracy (mean ± std)")
        ax.set_xlabel("accuracy (%)")
    fig.tight_layout()
    paths.append(out / "accuracy.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5), squeeze=False)
    conditions = ["acc", *CORRUPTIONS]
    for ax, d in zip(axes[0], datasets, strict=True):
        for r in (r for r in summary if r["dataset"] == d):
            style = "-" if r["variant"].startswith("stt") else "--"
            ax.plot(range(len(conditions)), [100 * r[c] for c in conditions], style, marker="o",
                    markersize=3, label=r["variant"])
        ax.set_xticks(range(len(conditions)), ["clean", *CORRUPTIONS], rotation=45, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{d}: robustness")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(out / "robustness.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def report(out_dir: str | Path) -> dict:
    """Write runs.csv, summary.csv, results.md and the plots from runs.jsonl; return the summary."""
    out, runs, summary = write_report(out_dir, summarize_runs, markdown, what="ablation")
    plot(summary, out)
    return dict(runs=len(runs), summary=summary)


def load_config(path: str | None, overrides: dict) -> AblationConfig:
    values = {}
    if path:
        import yaml

        values = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(values) - set(AblationConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; "
                         f"expected some of {sorted(AblationConfig.__dataclass_fields__)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return AblationConfig(**values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with AblationConfig fields (scripts/configs/ablation_*.yaml)")
    parser.add_argument("--out_dir")
    parser.add_argument("--workers", type=int, help="parallel training processes")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--variants", nargs="+", help=f"subset of {list(VARIANTS)}")
    parser.add_argument("--report_only", action="store_true", help="only rebuild tables and plots")
    args = parser.parse_args(argv)
    config = load_config(args.config, dict(out_dir=args.out_dir, workers=args.workers, epochs=args.epochs,
                                            seeds=args.seeds, variants=args.variants))
    outputs = "results.md, summary.csv, accuracy.png, robustness.png"
    return run_and_report(config, run, report, markdown, outputs, report_only=args.report_only)
