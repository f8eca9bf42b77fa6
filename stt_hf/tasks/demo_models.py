"""The demo's models: a classifier with its labels and attention pictures, a captioner, and how a
`--model` / `--captioner` value is loaded."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.classification import FASHION_MNIST_CLASSES
from ..plotting import pyplot
from ..reporting.visualize import (
    MODE_TITLES,
    capture,
    draw,
    head_map,
    heatmap,
    load_model,
    preprocess,
    show_input,
    stt_blocks,
)
from .demo_inputs import DemoError

MAIN_JOB_MODEL = Path("outputs/stt_resnet10_s-fashion_mnist")
MAIN_JOB_CAPTIONER = Path("outputs/captioner-stt_resnet10_s-stt-tuxpaint")  # stt-hf train-caption
FALLBACK_MODEL = "stt_resnet10_s"  # the main job's architecture, built untrained when none is trained
MODES = {"channel": "c", "height": "h", "width": "w"}
ALL_MODES = "all modes"


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------

@dataclass
class Classifier:
    """A timm-format STT classifier with its label names, and how to describe it on the page."""

    model: nn.Module
    labels: list[str]
    name: str
    untrained: bool = False
    blocks: list = field(default_factory=list)
    # One picture at a time: the capture hooks sit on the shared blocks, and pyplot is not thread-safe.
    drawing: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @torch.no_grad()
    def predict(self, image: Image.Image, top: int = 5) -> dict[str, float]:
        """{label: probability} of the `top` most likely classes."""
        pixels, _ = preprocess(self.model, image)
        probs = self.model(pixels).softmax(-1)[0]
        values, indices = probs.topk(min(top, probs.numel()))
        return {self.labels[i]: float(v) for v, i in zip(values.tolist(), indices.tolist(), strict=True)}

    def attention(self, image: Image.Image, mode: str = "channel") -> np.ndarray:
        """The attention picture (RGB array): one mode of every STT block, or `ALL_MODES`."""
        pixels, config = preprocess(self.model, image)
        with self.drawing:
            return self._draw(pixels, config, mode)

    def _draw(self, pixels: torch.Tensor, config: dict, mode: str) -> np.ndarray:
        captured = capture(self.model, pixels, self.blocks)
        if mode == ALL_MODES:
            title = (f"model: {self.name}\n{len(self.blocks)} STT block{'' if len(self.blocks) == 1 else 's'}"
                     f"{' (untrained)' if self.untrained else ''}")
            fig = draw(captured, pixels, config, head="mean", title=title)
        else:
            fig = draw_mode(captured, pixels, config, MODES[mode])
        return figure_array(fig)


def _labels_from_config(config: dict, num_classes: int) -> list[str]:
    """Label names from a transformers config (id2label) or a timm config (label_names)."""
    id2label = config.get("id2label") or {}
    names = config.get("label_names") or (config.get("pretrained_cfg") or {}).get("label_names")
    if id2label and len(id2label) == num_classes:
        return [str(id2label.get(str(i), id2label.get(i, i))) for i in range(num_classes)]
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    return [f"class {i}" for i in range(num_classes)]


def _config_json(spec: str) -> dict:
    """config.json of a checkpoint folder, or of a Hub repo (from the cache when offline)."""
    if Path(spec).is_dir():
        path = Path(spec) / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(spec, "config.json"))
    return json.loads(path.read_text()) if path.is_file() else {}


def is_captioner(spec: str | os.PathLike) -> bool:
    """Whether `spec` is a saved captioner folder (an encoder-decoder config)."""
    config = Path(spec) / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text()).get("model_type") == "vision-encoder-decoder"


def fresh_classifier() -> Classifier:
    """The main job's architecture with random weights, for when no model has been trained yet."""
    import timm

    import stt_hf  # noqa: F401  (registers the stt_* models with timm)

    from ..hf.configuration_stt import SttConfig

    config = SttConfig.from_timm_name(FALLBACK_MODEL, num_labels=len(FASHION_MNIST_CLASSES), img_size=28)
    torch.manual_seed(0)
    # Residual branches not zeroed, as in `stt-hf visualize`, so the attention maps are not uniform.
    model = timm.create_model(config.timm_architecture(), **config.to_timm_kwargs(), zero_init_last=False)
    model.pretrained_cfg = {**model.pretrained_cfg, **config.data_config,
                            "num_classes": config.num_labels, "input_size": config.input_size()}
    model.eval()
    return Classifier(model, list(FASHION_MNIST_CLASSES), f"{FALLBACK_MODEL} (untrained)", untrained=True,
                      blocks=stt_blocks(model))


def load_classifier(spec: str | None = None) -> Classifier:
    """A classifier from a checkpoint folder, a Hub id or a registered timm name (random weights).

    None: the main job's model when it has been trained, else `fresh_classifier()`.
    """
    if spec is None:
        if (MAIN_JOB_MODEL / "model.safetensors").is_file():
            spec = str(MAIN_JOB_MODEL)
        else:
            return fresh_classifier()
    if Path(spec).exists() and not Path(spec).is_dir():
        raise DemoError(f"--model {spec}: give the checkpoint's folder (with config.json and "
                        "model.safetensors), not a file")
    if Path(spec).is_dir() and is_captioner(spec):
        raise DemoError(f"--model {spec} is a captioner: pass it as --captioner")
    model = load_model(spec)
    num_classes = model.num_classes
    trained = Path(spec).exists() or "/" in spec
    labels = _labels_from_config(_config_json(spec), num_classes) if trained else _timm_labels(num_classes)
    name = spec if trained else f"{spec} (untrained)"
    return Classifier(model, labels, name, untrained=not trained, blocks=stt_blocks(model))


def _timm_labels(num_classes: int) -> list[str]:
    if num_classes == 1000:  # ImageNet: timm ships the class descriptions
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i).split(",")[0] for i in range(num_classes)]
    return [f"class {i}" for i in range(num_classes)]


@dataclass
class Captioner:
    """A saved captioner, its tokenizer and image processor."""

    model: nn.Module
    tokenizer: object
    image_processor: object
    name: str

    def captions(self, image: Image.Image, beams: int | None = None) -> tuple[str, str]:
        """(greedy caption, beam-search caption)."""
        from .evaluation_caption import generate_captions

        beams = beams or max(getattr(self.model.generation_config, "num_beams", 1) or 1, 3)
        greedy = generate_captions(self.model, self.tokenizer, self.image_processor, [image], num_beams=1)
        beam = generate_captions(self.model, self.tokenizer, self.image_processor, [image], num_beams=beams)
        return greedy[0], beam[0]


def load_captioner(spec: str) -> Captioner:
    if not is_captioner(spec):
        raise DemoError(f"--captioner {spec}: not a saved captioner folder (written by stt-hf train-caption)")
    from .evaluation_caption import load_captioner as load

    model, tokenizer, image_processor = load(spec)
    return Captioner(model, tokenizer, image_processor, str(spec))


# ---------------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------------

def draw_mode(captured: list[dict], pixels: torch.Tensor, config: dict, mode: str):
    """The model input, then mode `mode`'s attention matrix (mean over heads) of each STT block."""
    plt = pyplot()

    cols = 1 + len(captured)
    fig, axes = plt.subplots(1, cols, figsize=(3.6 * cols, 3.8), squeeze=False)
    fig.subplots_adjust(left=0.05, right=0.95, top=0.8, bottom=0.15, wspace=0.5)
    show_input(axes[0, 0], pixels, config)
    for ax, cap in zip(axes[0, 1:], captured, strict=True):
        x = cap["x"]
        if mode in cap["maps"]:
            heatmap(ax, head_map(cap["maps"][mode], "mean"), f"{cap['name']} ({x.shape[2]}x{x.shape[3]})\n"
                    f"{MODE_TITLES[mode]}", xlabel="source index", ylabel="output index")
        else:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{cap['name']}:\nno {MODE_TITLES[mode].split()[0]} mode", ha="center",
                    va="center", transform=ax.transAxes)
    return fig


def figure_array(fig) -> np.ndarray:
    """The figure as an RGB array (no file), and the figure closed."""
    plt = pyplot()

    fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return array
