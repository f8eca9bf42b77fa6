"""Export for serving: ONNX through `torch.export`, with a dynamic batch axis.

What the exported graph keeps free: the batch size. What it fixes: the input resolution, to the size
it was exported at (the model's own input size unless `img_size` says otherwise). STT blocks serve
other resolutions by interpolating their synthesized maps, but whether to interpolate is decided from
the input size while exporting, so a graph serves the resolution it was exported at: export once per
serving resolution. Each STT block's output BatchNorm is folded into its projection conv first
(`fuse_for_inference`), which gives the same outputs with one op fewer.

Sources: a folder saved by `SttForImageClassification.save_pretrained` (or `stt-hf train`), a Hub id
of such a checkpoint, or a registered timm name (`stt_resnet50`, `stt_resnet18.tv_in1k`, or
`hf-hub:ORG/NAME` for timm-format weights on the Hub).
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

import torch
from torch import nn

from ..models.stt_resnet import SttResNet

INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"
# The opsets torch's dynamo exporter writes: torchlib's 18 up to torch's newest. It writes 18 for a
# lower request and fails deep in the export for a higher one, so both are refused up front.
MIN_OPSET = 18
MAX_OPSET = getattr(getattr(torch.onnx, "_constants", None), "ONNX_MAX_OPSET", 23)


def check_export_options(img_size, opset) -> None:
    sizes = img_size if isinstance(img_size, (tuple, list)) else (img_size,)
    if img_size is not None and any(s < 1 for s in sizes):
        raise ValueError(f"img_size must be a positive number of pixels, got {img_size}")
    if opset is not None and not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in {MIN_OPSET}..{MAX_OPSET} (what torch's ONNX exporter writes), "
                         f"got {opset}")


class LogitsOnly(nn.Module):
    """A transformers classifier as a plain module: pixel values in, logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=True).logits


def is_timm_name(source: str) -> bool:
    import timm

    return source.startswith("hf-hub:") or timm.is_model(source)


def load_for_export(source: str, *, pretrained: bool = False) -> tuple[nn.Module, tuple[int, int, int]]:
    """(eval-mode module mapping (B, C, H, W) pixel values to logits, its (C, H, W) input size).

    `pretrained` applies to timm names (a saved folder or Hub checkpoint always loads its weights).
    """
    import timm

    import stt_hf  # noqa: F401  (registers the stt_* models with timm and transformers)

    if not os.path.isdir(source) and is_timm_name(source):
        model = timm.create_model(source, pretrained=pretrained or source.startswith("hf-hub:")).eval()
        return model, tuple(model.pretrained_cfg["input_size"])
    from ..hf.modeling_stt import SttForImageClassification

    hf_model = SttForImageClassification.from_pretrained(source).eval()
    size = hf_model.config.img_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return LogitsOnly(hf_model).eval(), (hf_model.config.in_chans, *size)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold the output BatchNorm of every STT (and baseline) block in `model` into its projection."""
    for module in model.modules():
        if isinstance(module, SttResNet):
            module.fuse_for_inference()
    return model


def export_onnx(source: str | nn.Module, output: str | os.PathLike, *,
                img_size: int | tuple[int, int] | None = None, pretrained: bool = False, fuse: bool = True,
                opset: int | None = None) -> Path:
    """Export `source` (saved folder, Hub id, timm name, or an eval-mode module) to ONNX at `output`.

    The graph has one input `pixel_values` (B, C, H, W) with B dynamic and (H, W) fixed at
    `img_size` (default: the model's input size; required when `source` is a module), and one output
    `logits` (B, num_classes). With `fuse`, the attention blocks' output BatchNorms are folded first
    (a module passed in is copied, not changed). Returns the path written.
    """
    check_export_options(img_size, opset)
    if isinstance(source, nn.Module):
        if img_size is None:
            raise ValueError("img_size is required when exporting a module")
        model = copy.deepcopy(source).eval() if fuse else source.eval()
        in_chans, size = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels, img_size
    else:
        model, (in_chans, *size) = load_for_export(source, pretrained=pretrained)
        size = img_size if img_size is not None else size
    if fuse:
        fuse_for_inference(model)
    size = (size, size) if isinstance(size, int) else tuple(size)
    # Batch 2 as the example: torch.export specializes a dimension of size 1, 2 stays symbolic.
    example = torch.randn(2, in_chans, *size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                                opset_version=opset, verbose=False)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(output))
    return output


def max_abs_diff(model: nn.Module, onnx_path: str | os.PathLike, x: torch.Tensor) -> float:
    """max |onnxruntime(x) - model(x)|: the check the tests and the command line make."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        ref = model(x)
    return (torch.from_numpy(out) - ref).abs().max().item()


def run_command(args: argparse.Namespace) -> int:
    from ..hf.convert import check_model_folder
    from ..reporting.publish import check_output_file

    check_export_options(args.img_size, args.opset)
    check_output_file(args.output, "output", ".onnx")
    if not os.path.exists(args.model) and not is_timm_name(args.model) and (
            args.model.startswith(("/", ".", "~")) or args.model.count("/") != 1):
        raise FileNotFoundError(f"{args.model}: no such model folder, and not a registered timm name or a "
                                "Hub id (ORG/NAME); see `stt-hf models`")
    check_model_folder(args.model, ("stt",), "model")
    model, (in_chans, *size) = load_for_export(args.model, pretrained=args.pretrained)
    size = [args.img_size] * 2 if args.img_size is not None else size
    path = export_onnx(model, args.output, img_size=tuple(size), fuse=not args.no_fuse, opset=args.opset)
    # Checked against the model as loaded (unfused): the fold is part of what is checked.
    diffs = {b: max_abs_diff(model, path, torch.randn(b, in_chans, *size)) for b in (1, 3)}
    print(f"wrote {path} (input {INPUT_NAME}: batch x {in_chans} x {size[0]} x {size[1]}, batch dynamic)")
    print("max |onnxruntime - torch|: " + ", ".join(f"batch {b}: {d:.2e}" for b, d in diffs.items()))
    return 0


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export-onnx", help="export a model to ONNX (dynamic batch axis) and check it "
                              "against onnxruntime")
    p.add_argument("model", help="saved model folder, Hub id, or timm name (e.g. stt_resnet50)")
    p.add_argument("output", help="the .onnx file to write")
    p.add_argument("--img_size", type=int, default=None,
                   help="input resolution the graph serves (default: the model's input size)")
    p.add_argument("--pretrained", action="store_true", help="timm names: load timm's pretrained weights")
    p.add_argument("--no_fuse", action="store_true",
                   help="keep the STT output BatchNorms instead of folding them into the projections")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.set_defaults(func=run_command)
    return p


__all__ = ["export_onnx", "fuse_for_inference", "load_for_export", "max_abs_diff"]
