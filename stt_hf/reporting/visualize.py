"""Draw what the STT blocks of a model synthesize for one image: `stt-hf visualize`.

For each STT block the figure shows, in one row:

- the synthesized attention matrices of the block's modes (channel A_c, height A_h, width A_w), for
  one head or averaged over heads;
- the block input's energy, the channel-mean of |X| at each position;
- how the mode products reweight the value tensor V: channel-mean |Y| over channel-mean |V| at each
  position, Y = V x_c A_c x_h A_h x_w A_w (each A is a weighted average, so values of mixed sign
  partly cancel: low ratios mark where the attention averages most, high ones where it keeps or
  gathers energy).

The row title gives the block's relative output change ||Z - X|| / ||X||, which is 0 for a freshly
built model (the output BN starts at zero weight, so every block starts as the identity).

    stt-hf visualize --model stt_resnet18 --image chelsea
    stt-hf visualize --model outputs/my-run --image photo.jpg --out attention.png --size 128
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from torch import nn

from ..data.common import to_channels
from ..layers.stt import STT
from .publish import check_output_file

# scikit-image's photos bundled with the package (the others download on first use).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
DEFAULT_IMAGE = "chelsea"
DEFAULT_OUT_DIR = Path("outputs/visualize")
MODE_TITLES = {"c": "channel attention A_c", "h": "height attention A_h", "w": "width attention A_w"}


# ---------------------------------------------------------------------------------------------------
# Inputs: the model, the image, the preprocessing
# ---------------------------------------------------------------------------------------------------

def load_model(spec: str | nn.Module, *, allow_pickle: bool = False) -> nn.Module:
    """A model in eval mode: a timm model name (random init), a checkpoint folder or a Hub repo id.

    Random-init models are built with zero_init_last=False (see below), so they are not the identity
    everywhere; the STT blocks' own output BN still starts at zero weight.
    """
    if isinstance(spec, nn.Module):
        return spec.eval()
    from ..hf.convert import timm_from_pretrained

    if Path(spec).exists() or "/" in spec:  # a folder (either format), or a Hub id to fetch
        return timm_from_pretrained(spec, allow_pickle=allow_pickle)
    if not timm.is_model(spec):
        raise ValueError(f"{spec!r} is neither a registered timm model name, a checkpoint folder, nor a "
                         f"Hub repo id (ORG/NAME); see `stt-hf models` for the STT model names")
    torch.manual_seed(0)  # the same random weights on every run
    try:
        # timm zero-initializes each residual branch's last BN, which would make every block-slot STT
        # input exactly zero and its maps uniform; a random-init picture needs them non-zero.
        return timm.create_model(spec, pretrained=False, zero_init_last=False).eval()
    except TypeError:  # a model without that option (then it has no STT blocks either)
        return timm.create_model(spec, pretrained=False).eval()


def load_image(image: str | Path | Image.Image | np.ndarray) -> tuple[Image.Image, str]:
    """(PIL image, short name): a file path, a bundled scikit-image photo name, a PIL image or an array."""
    if isinstance(image, Image.Image):
        return image, "image"
    if isinstance(image, np.ndarray):
        return Image.fromarray(image), "image"
    path = Path(image)
    if not path.exists() and str(image) in SKIMAGE_PHOTOS:
        import skimage.data

        return Image.fromarray(getattr(skimage.data, str(image))()), str(image)
    if not path.is_file():
        raise FileNotFoundError(f"No image file {str(image)!r} (give a path, or one of the bundled "
                                f"photos {', '.join(SKIMAGE_PHOTOS)})")
    with Image.open(path) as img:
        img.load()
        return img.copy(), path.stem


def input_channels(model: nn.Module) -> int:
    """Channels the model's first convolution takes."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    try:
        first = model.get_submodule(cfg.get("first_conv") or "conv1")
        return first.in_channels
    except AttributeError:
        return (cfg.get("input_size") or (3,))[0]


def preprocess(model: nn.Module, image: Image.Image, size: int | None = None) -> tuple[torch.Tensor, dict]:
    """(1, C, H, W) pixels from timm's eval transform of the model, and the data config used."""
    in_chans = input_channels(model)
    config = timm.data.resolve_data_config({}, model=model)
    _, h, w = config["input_size"]
    config["input_size"] = (in_chans, size, size) if size else (in_chans, h, w)
    for key in ("mean", "std"):  # e.g. a 1-channel model with RGB statistics: their average
        value = tuple(config[key])
        config[key] = value if len(value) == in_chans else (sum(value) / len(value),) * in_chans
    # Any PIL mode (P, RGBA, CMYK, I;16, ...) -> what the model takes, by the package's one policy.
    image = to_channels(image, in_chans)
    transform = timm.data.create_transform(**config)
    return transform(image).unsqueeze(0), config


# ---------------------------------------------------------------------------------------------------
# What the blocks compute
# ---------------------------------------------------------------------------------------------------

def stt_blocks(model: nn.Module) -> list[tuple[str, STT]]:
    """(name, block) of the model's STT blocks, in forward order; ValueError if it has none."""
    if hasattr(model, "attention_modules"):  # SttResNet: exactly the placed attention modules
        modules = model.attention_modules()
    else:
        modules = list(model.named_modules())
    blocks = [(name, m) for name, m in modules if isinstance(m, STT)]
    if not blocks:
        attn = getattr(model, "attn_layer", "no attention_modules()")
        raise ValueError(f"{type(model).__name__} has no STT blocks to visualize (attn_layer={attn!r}); "
                         f"use an stt_* model with attn_layer='stt'")
    return blocks


@torch.no_grad()
def capture(model: nn.Module, pixels: torch.Tensor, blocks: list[tuple[str, STT]]) -> list[dict]:
    """Run the model once; per block: its input and output, V, the attention maps and the reweighted V."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [block.register_forward_hook(
        # Copies: the residual block adds its shortcut into the output in place afterwards.
        lambda module, args, output, name=name: seen.__setitem__(name, (args[0].clone(), output.clone())))
        for name, block in blocks]
    try:
        model(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    out = []
    for name, block in blocks:
        x, z = seen[name]
        # V, the maps and their product exactly as STT.forward computes them.
        v = block.values(x)
        maps = block.attention_maps(v)
        y = block.transform(v, maps)
        out.append(dict(name=name, block=block, x=x, z=z, v=v, y=y, maps=maps))
    return out


def head_map(attn: torch.Tensor, head: int | str) -> np.ndarray:
    """(B or 1, G, I, I) -> (I, I) of batch item 0: one head, or the mean over heads."""
    attn = attn[0].float()
    if head == "mean":
        return attn.mean(0).numpy()
    if not 0 <= int(head) < attn.shape[0]:
        raise ValueError(f"head must be 'mean' or in 0..{attn.shape[0] - 1}, got {head!r}")
    return attn[int(head)].numpy()


# ---------------------------------------------------------------------------------------------------
# The figure
# ---------------------------------------------------------------------------------------------------

def show_input(ax, pixels: torch.Tensor, config: dict) -> None:
    """The preprocessed image the model sees, un-normalized."""
    mean = torch.tensor(config["mean"]).view(-1, 1, 1)
    std = torch.tensor(config["std"]).view(-1, 1, 1)
    img = (pixels[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
    ax.set_title(f"model input {pixels.shape[-2]}x{pixels.shape[-1]}", fontsize=9)
    ax.axis("off")


def heatmap(ax, values: np.ndarray, title: str, *, cmap: str = "viridis", xlabel: str = "",
            ylabel: str = "") -> None:
    """values as an image with a colorbar; the axes count rows and columns in whole indices."""
    from matplotlib.ticker import MaxNLocator

    ax.axis("on")
    im = ax.imshow(values, cmap=cmap, interpolation="nearest")
    # Few ticks: drawing tick labels is most of the rendering time of a many-panel figure.
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.locator = MaxNLocator(nbins=4)
    bar.update_ticks()
    bar.ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def draw(captured: list[dict], pixels: torch.Tensor, config: dict, *, head: int | str, title: str):
    """The matplotlib figure: the input, then one row per STT block."""
    from ..plotting import pyplot

    plt = pyplot()

    cols = 5  # up to three attention maps, input energy, reweighting
    fig, axes = plt.subplots(1 + len(captured), cols, figsize=(3.4 * cols, 3.4 * (1 + len(captured))),
                             squeeze=False)
    # A fixed layout: matplotlib's automatic layouts take seconds per row of colorbars.
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.04, right=0.97, top=1 - 0.3 / height, bottom=0.55 / height,
                        wspace=0.45, hspace=0.75)
    for ax in axes.flat:
        ax.axis("off")
    show_input(axes[0, 0], pixels, config)
    axes[0, 1].text(0, 0.5, title, fontsize=10, va="center", transform=axes[0, 1].transAxes)

    which = "mean over heads" if head == "mean" else f"head {head}"
    for row, cap in zip(axes[1:], captured, strict=True):
        block, x = cap["block"], cap["x"]
        change = ((cap["z"] - x).norm() / x.norm().clamp_min(1e-12)).item()
        identity = "  (identity: the output BN weight is 0, as built)" if change == 0 else ""
        if not x.any():  # e.g. an untrained timm ResNet: the branch's last BN starts at zero weight
            identity += "\nthe block input is all zero, so every synthesized map is uniform"
        row[0].annotate(f"{cap['name']}: C={x.shape[1]}, {x.shape[2]}x{x.shape[3]}, synth={block.synth}, "
                        f"heads={block.heads};  ||Z - X|| / ||X|| = {change:.3g}{identity}",
                        xy=(0, 1), xycoords="axes fraction", xytext=(-20, 34), textcoords="offset points",
                        fontsize=10, fontweight="bold", ha="left", va="bottom")
        for ax, mode in zip(row, [m for m in ("c", "h", "w") if m in cap["maps"]], strict=False):
            heatmap(ax, head_map(cap["maps"][mode], head), f"{MODE_TITLES[mode]}\n({which})",
                    xlabel="source index", ylabel="output index")
        heatmap(row[3], x[0].abs().mean(0).numpy(), "block input: mean_c |X|", cmap="magma")
        ratio = cap["y"][0].abs().mean((0, 1)) / cap["v"][0].abs().mean((0, 1)).clamp_min(1e-12)
        heatmap(row[4], ratio.numpy(), "reweighting: mean_c |Y| / mean_c |V|", cmap="cividis")
    return fig


def default_out(model_spec: str | nn.Module, image_name: str) -> Path:
    name = model_spec if isinstance(model_spec, str) else type(model_spec).__name__
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(name)).name or str(name))
    return DEFAULT_OUT_DIR / f"{name}-{image_name}.png"


def visualize(model: str | nn.Module, image: str | Path | Image.Image | np.ndarray = DEFAULT_IMAGE,
              out: str | Path | None = None, *, size: int | None = None, head: int | str = "mean",
              dpi: int = 90, allow_pickle: bool = False) -> Path:
    """Write one PNG with the attention every STT block of `model` synthesizes for `image`; return its path.

    model: a timm model name (random init), a checkpoint folder or Hub id, or a module with STT blocks.
    image: an image file, one of the bundled photos (astronaut, chelsea, coffee, rocket), or an image.
    size: run at size x size instead of the model's input size (STT interpolates its synthesized maps).
    head: which head's maps to draw, or "mean" to average them.
    allow_pickle: read a folder's pickle weights (.bin, .pth) too (with torch.load(weights_only=True)).
    """
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if out is not None:
        check_output_file(out, "--out", ".png")
    net = load_model(model, allow_pickle=allow_pickle)
    blocks = stt_blocks(net)
    img, image_name = load_image(image)
    pixels, config = preprocess(net, img, size)
    captured = capture(net, pixels, blocks)
    name = model if isinstance(model, str) else type(model).__name__
    title = (f"model: {name}\nimage: {image_name} ({img.size[0]}x{img.size[1]} {img.mode})\n"
             f"{len(blocks)} STT block{'' if len(blocks) == 1 else 's'}")
    fig = draw(captured, pixels, config, head=head, title=title)
    out = Path(out) if out is not None else default_out(model, image_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    from ..plotting import pyplot

    pyplot().close(fig)
    return out


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------

def _head(text: str) -> int | str:
    return text if text == "mean" else int(text)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True,
                        help="timm model name (random init, e.g. stt_resnet18), checkpoint folder or Hub id")
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help=f"image file, or a bundled photo: {', '.join(SKIMAGE_PHOTOS)} "
                             "(default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help=f"PNG to write (default: {DEFAULT_OUT_DIR}/MODEL-IMAGE.png)")
    parser.add_argument("--size", type=int, default=None, help="input size N (default: the model's)")
    parser.add_argument("--head", type=_head, default="mean", help="head index, or 'mean' (default)")
    parser.add_argument("--allow_pickle", action="store_true",
                        help="read a folder's pickle weights (.bin, .pth) with torch.load(weights_only=True)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; errors propagate to the caller's reporting."""
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be a positive number of pixels, got {args.size}")
    print(visualize(args.model, args.image, args.out, size=args.size, head=args.head,
                    allow_pickle=args.allow_pickle))
    return 0


def add_visualize_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `visualize` command to an argparse subparsers object (for `stt-hf visualize`)."""
    parser = subparsers.add_parser("visualize", help="draw the attention maps of a model's STT blocks",
                                   description=__doc__.split("\n\n")[0])
    add_arguments(parser).set_defaults(func=run)
    return parser


__all__ = ["add_visualize_parser", "load_image", "load_model", "preprocess", "stt_blocks", "visualize"]
