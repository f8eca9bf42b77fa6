"""`stt-hf eval-seg`: score a saved segmenter on a dataset split; write metrics JSON and an overlay PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..data.segmentation import class_names, decode_segmentation, load_segmentation_dataset, normalize
from ..hf.modeling_stt_seg import IGNORE_INDEX
from ..metrics import compute_segmentation_metrics
from ..reporting.publish import check_output_file, write_json
from .common import add_source_arguments, check_positive

OVERLAY_ALPHA = 0.55


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser, model_help="saved segmenter folder (stt-hf train-seg) or Hub id",
                         dataset="fashion_scenes", trainer="train-seg")
    parser.add_argument("--mask_column", default="mask")
    parser.add_argument("--scenes_canvas", type=int, default=64, help="fashion_scenes: canvas side")
    parser.add_argument("--scenes_test", type=int, default=500, help="fashion_scenes: test scenes")
    parser.add_argument("--scenes_validation", type=int, default=500,
                        help="fashion_scenes: validation scenes")
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42, help="seed of a carved validation split")
    parser.add_argument("--output", default=None,
                        help="metrics JSON (default: <model>/eval_seg_<split>.json)")
    parser.add_argument("--overlay", default=None,
                        help="prediction overlay PNG (default: beside the JSON, <json stem>_overlay.png)")
    parser.add_argument("--overlay_count", type=int, default=8, help="images in the overlay")


@torch.no_grad()
def predict_maps(model, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Predicted label maps (N, H, W) uint8 of uint8 images (N, 3, H, W), in eval mode."""
    was_training = model.training
    model.eval()
    data = model.config.backbone_config.data_config
    maps = []
    for start in range(0, len(images), batch_size):
        pixels = normalize(images[start:start + batch_size], data["mean"], data["std"])
        maps.append(model(pixel_values=pixels.to(model.device)).logits.argmax(dim=1).to(torch.uint8).cpu())
    model.train(was_training)
    return torch.cat(maps) if maps else torch.zeros((0, *images.shape[-2:]), dtype=torch.uint8)


def palette(num_labels: int) -> np.ndarray:
    """(num_labels, 3) float RGB colours: class 0 (background) black, the others from tab20."""
    from matplotlib import colormaps

    colors = np.array([colormaps["tab20"](i % 20)[:3] for i in range(max(num_labels - 1, 0))])
    return np.vstack([np.zeros((1, 3)), colors]) if num_labels else np.zeros((0, 3))


def save_overlay(path, images: torch.Tensor, masks: torch.Tensor, predictions: torch.Tensor,
                 labels: list[str]) -> Path:
    """One row per image: the image, the reference mask over it, the prediction over it (class colours,
    legend of the classes shown; 255 = not scored is drawn white)."""
    from matplotlib.patches import Patch

    from ..plotting import pyplot

    plt = pyplot()

    colors = np.vstack([palette(len(labels)), np.ones((1, 3))])
    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows + 0.8), squeeze=False)
    shown = set()
    for row in range(rows):
        image = images[row].permute(1, 2, 0).numpy() / 255
        for col, (title, mask) in enumerate((("image", None), ("reference", masks[row]),
                                             ("prediction", predictions[row]))):
            ax = axes[row, col]
            picture = image
            if mask is not None:
                values = mask.numpy().astype(np.int64)
                values = np.where(values == IGNORE_INDEX, len(labels), np.minimum(values, len(labels)))
                shown.update(int(v) for v in np.unique(values) if v < len(labels))
                picture = (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colors[values]
                picture = np.where((values == 0)[..., None], image, picture)
            ax.imshow(picture, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    handles = [Patch(color=colors[i], label=labels[i]) for i in sorted(shown) if i > 0]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def check_arguments(args: argparse.Namespace) -> None:
    """The flag values, before any work."""
    check_positive(batch_size=args.batch_size, overlay_count=args.overlay_count,
                   scenes_canvas=args.scenes_canvas,
                   scenes_test=args.scenes_test, scenes_validation=args.scenes_validation,
                   max_eval_samples=args.max_eval_samples)
    check_output_file(args.output, "--output", ".json")
    check_output_file(args.overlay, "--overlay", ".png")


def run(args: argparse.Namespace) -> dict:
    from ..hf.modeling_stt_seg import SttUperNetForSemanticSegmentation

    check_arguments(args)
    model = SttUperNetForSemanticSegmentation.from_pretrained(args.model).eval()
    dsd, _ = load_segmentation_dataset(
        args.dataset, image_column=args.image_column, mask_column=args.mask_column, seed=args.seed,
        scene_canvas=args.scenes_canvas,
        scene_sizes={"train": 1, "validation": args.scenes_validation, "test": args.scenes_test},
        max_eval_samples=args.max_eval_samples)
    split = args.split or ("test" if "test" in dsd else "validation")
    if split not in dsd:
        raise ValueError(f"--split {split!r} is not in the dataset; it has {sorted(dsd)}")
    num_labels = model.config.num_labels
    labels = class_names([model.config.id2label[i] for i in range(num_labels)], num_labels)
    size = model.config.backbone_config.img_size
    size = size if isinstance(size, int) else size[0]
    arrays, _ = decode_segmentation({split: dsd[split]}, size, num_labels)
    data = arrays[split]
    predictions = predict_maps(model, data.images, args.batch_size)
    metrics = compute_segmentation_metrics(predictions.numpy(), data.masks.numpy(), num_labels, IGNORE_INDEX,
                                           labels)
    result = dict(model=str(args.model), dataset=args.dataset, split=split, samples=len(data),
                  metrics=metrics)
    default_dir = Path(args.model) if Path(args.model).is_dir() else Path(".")
    out = Path(args.output) if args.output else default_dir / f"eval_seg_{split}.json"
    overlay = Path(args.overlay) if args.overlay else out.with_name(f"{out.stem}_overlay.png")
    count = args.overlay_count
    result["overlay"] = str(save_overlay(overlay, data.images[:count], data.masks[:count],
                                         predictions[:count], labels))
    write_json(out, result)
    print(f"{split}: mean_iou {metrics['mean_iou']:.4f}, pixel_accuracy {metrics['pixel_accuracy']:.4f}")
    print(f"metrics written to {out}, overlay to {overlay}")
    return result
