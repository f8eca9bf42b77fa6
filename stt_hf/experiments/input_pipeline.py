"""`stt-hf bench-input`: can the input pipeline feed a model at 224 px?

Measured in one process on this machine, each with `torch.utils.benchmark.Timer`:

- one DataLoader worker's images/s: decode a photo and run timm's training transform at `--img_size`
  (random-resized crop, flip, to tensor, normalize) on one thread, which is what a worker does;
- the model's training-step images/s: forward, backward and an SGD step on a batch at `--img_size`,
  with the machine's threads; `--reference` (resnet50) the same way, for the cost ratio;
- workers needed per training process = ceil(model images/s / one worker's images/s), here and on a
  GPU whose training rate is the published ResNet-50 rate divided by the measured cost ratio (an
  assumption: the ratio measured on this CPU is taken to hold on the GPU).

The photos are scikit-image's bundled astronaut, chelsea, coffee and rocket (400-640 px a side, the
size of ImageNet photos) saved as JPEG at quality 90, or the images of `--images FOLDER`.

    stt-hf bench-input --model stt_resnet50 --reference resnet50 --out outputs/bench_input
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

# The published ResNet-50 (v1.5) training rate on one A100 80GB with mixed precision, PyTorch, DALI
# decoding on the GPU: NVIDIA Deep Learning Examples, ConvNets/resnet50v1.5 README, "Training
# performance: NVIDIA DGX A100 (8x A100 80GB)": 2470 img/s on 1 GPU, 16621 img/s on 8.
PUBLISHED_RESNET50_GPU_IMAGES_PER_S = 2470.0
PUBLISHED_RESNET50_8GPU_IMAGES_PER_S = 16621.0
BUNDLED_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def photos(folder: str | None = None) -> list[bytes]:
    """Encoded images: every JPEG/PNG of `folder`, else scikit-image's bundled photos as JPEG."""
    if folder:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not files:
            raise ValueError(f"--images {folder}: no .jpg, .jpeg or .png files")
        return [p.read_bytes() for p in files]
    import skimage.data
    from PIL import Image

    encoded = []
    for name in BUNDLED_PHOTOS:
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def worker_images_per_s(model: str, img_size: int, images: list[bytes], min_run_time: float) -> float:
    """Images/s of decoding + the model's timm training transform on one thread (one worker)."""
    from PIL import Image

    from ..hf.configuration_stt import SttConfig
    from ..tasks.common import image_transforms

    config = SttConfig.from_timm_name(model, img_size=img_size)
    train_tf, _ = image_transforms(config, crop_scale=0.08, hflip=0.5)

    def pipeline():
        for data in images:
            train_tf(Image.open(io.BytesIO(data)))

    timer = benchmark.Timer("pipeline()", globals={"pipeline": pipeline}, num_threads=1)
    return len(images) / timer.blocked_autorange(min_run_time=min_run_time).median


def train_images_per_s(name: str, img_size: int, batch: int, threads: int, min_run_time: float,
                       bf16: bool) -> float:
    """Images/s of a training step (forward, backward, SGD) of a random-init timm model."""
    import timm

    import stt_hf  # noqa: F401 (registers the stt models)

    torch.manual_seed(0)
    model = timm.create_model(name, img_size=img_size) if name.startswith("stt_") else timm.create_model(name)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, img_size, img_size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, model.num_classes, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    timer = benchmark.Timer("step()", globals={"step": step}, num_threads=threads)
    return batch / timer.blocked_autorange(min_run_time=min_run_time).median


def workers_needed(model_images_per_s: float, worker_images_per_s_: float) -> int:
    return max(1, math.ceil(model_images_per_s / worker_images_per_s_))


def run(args: argparse.Namespace) -> dict:
    images = photos(args.images)
    threads = args.threads or torch.get_num_threads()
    started = time.time()
    worker = worker_images_per_s(args.model, args.img_size, images, args.min_time)
    # The models in alternation, `--rounds` times, each rate the median of its rounds: a machine whose
    # load drifts then shifts both alike.
    names = [args.model, args.reference] if args.reference else [args.model]
    rates = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            rates[name].append(train_images_per_s(name, args.img_size, args.batch, threads, args.min_time,
                                                  args.bf16))
    model_rate = statistics.median(rates[args.model])
    reference_rate = statistics.median(rates[args.reference]) if args.reference else None
    # The model's cost relative to the reference, applied to the reference's published GPU rate.
    ratio = reference_rate / model_rate if reference_rate else None
    gpu_rate = PUBLISHED_RESNET50_GPU_IMAGES_PER_S / ratio if ratio else None
    results = dict(
        model=args.model, reference=args.reference, img_size=args.img_size, batch=args.batch, threads=threads,
        bf16=args.bf16, images=len(images), rounds=args.rounds,
        mean_image_pixels=round(sum(_pixels(d) for d in images) / len(images)),
        worker_images_per_s=round(worker, 1), model_train_images_per_s=round(model_rate, 2),
        reference_train_images_per_s=round(reference_rate, 2) if reference_rate else None,
        cost_ratio=round(ratio, 3) if ratio else None,
        workers_needed_here=workers_needed(model_rate, worker),
        assumed_gpu_train_images_per_s=round(gpu_rate) if gpu_rate else None,
        workers_needed_per_gpu=workers_needed(gpu_rate, worker) if gpu_rate else None,
        wall_s=round(time.time() - started, 1))
    print_results(results)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "input_pipeline.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"   written: {out / 'input_pipeline.json'}")
    return results


def _pixels(data: bytes) -> int:
    from PIL import Image

    width, height = Image.open(io.BytesIO(data)).size
    return width * height


def print_results(r: dict) -> None:
    side = round(math.sqrt(r["mean_image_pixels"]))
    print(f"\n== input pipeline at {r['img_size']} px ({r['images']} photos of ~{side}x{side} px, "
          f"{r['threads']} threads for training, bf16 {r['bf16']})")
    rows = [("one worker: decode + train transform", r["worker_images_per_s"]),
            (f"{r['model']} training step, batch {r['batch']}", r["model_train_images_per_s"])]
    if r["reference"]:
        rows.append((f"{r['reference']} training step", r["reference_train_images_per_s"]))
    for name, rate in rows:
        print(f"   {name:42s} {rate:9.2f} images/s")
    if r["reference"]:
        print(f"   cost ratio {r['model']} / {r['reference']}: {r['cost_ratio']:.3f}")
    print(f"   workers {r['model']} needs here: {r['workers_needed_here']}")
    if r["assumed_gpu_train_images_per_s"]:
        print(f"   on a GPU training it at ~{r['assumed_gpu_train_images_per_s']} images/s (published "
              f"resnet50 {PUBLISHED_RESNET50_GPU_IMAGES_PER_S:.0f} images/s / cost ratio): "
              f"{r['workers_needed_per_gpu']} workers per GPU")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default="stt_resnet50")
    parser.add_argument("--reference", default="resnet50", help="timm model for the cost ratio ('' for none)")
    parser.add_argument("--img_size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8, help="training-step batch")
    parser.add_argument("--threads", type=int, default=None, help="training threads (default: torch's)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in the training step")
    parser.add_argument("--min_time", type=float, default=3.0, help="seconds each measurement runs at least")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the training steps")
    parser.add_argument("--images", default=None, help="a folder of JPEG/PNG images to decode instead")
    parser.add_argument("--out", default=None, help="folder for input_pipeline.json")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stt-hf bench-input", description=__doc__.split("\n\n")[0])
    args = add_arguments(parser).parse_args(argv)
    for flag in ("img_size", "batch", "threads", "rounds"):  # before any measurement
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be a positive integer, got {getattr(args, flag)}")
    if not args.min_time > 0:
        raise ValueError(f"--min_time must be a positive number of seconds, got {args.min_time}")
    return args


def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


__all__ = ["PUBLISHED_RESNET50_8GPU_IMAGES_PER_S", "PUBLISHED_RESNET50_GPU_IMAGES_PER_S", "add_arguments",
           "main", "parse_args", "photos", "run", "train_images_per_s", "worker_images_per_s",
           "workers_needed"]

if __name__ == "__main__":
    main()
