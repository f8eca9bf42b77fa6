"""A browser demo of a model: `stt-hf demo`, and the Hub Space that `stt-hf push-space` publishes.

- Classification: upload an image or pick an example (scikit-image's photos, Fashion-MNIST items),
  get the top-5 labels with their scores and the attention each STT block synthesizes for the image
  (the `stt-hf visualize` figure), one mode at a time (channel, height, width) or all of them.
- Captioning, for a captioner checkpoint: the caption by greedy search and by beam search.

    stt-hf demo                                          # the main job's model, else an untrained one
    stt-hf demo --model outputs/my-run --captioner outputs/captioner-stt_resnet10_s-stt-tuxpaint
    stt-hf push-space --repo_id my-org/stt-demo --model outputs/stt_resnet10_s-fashion_mnist

Everything runs offline. Requests wait in a bounded queue, with their own concurrency limit for
classification and captioning, so a slow caption does not hold up the classifier; a bad upload (not
an image, too many pixels) is answered with a message in the page.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..data.classification import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR_ENV,
    FASHION_MNIST_FILES,
    read_idx,
)
from ..reporting.visualize import (
    MODE_TITLES,
    SKIMAGE_PHOTOS,
    capture,
    draw,
    head_map,
    heatmap,
    load_model,
    preprocess,
    show_input,
    stt_blocks,
)

MAIN_JOB_MODEL = Path("outputs/stt_resnet10_s-fashion_mnist")
MAIN_JOB_CAPTIONER = Path("outputs/captioner-stt_resnet10_s-stt-tuxpaint")  # stt-hf train-caption
FALLBACK_MODEL = "stt_resnet10_s"  # the main job's architecture, built untrained when none is trained
MODES = {"channel": "c", "height": "h", "width": "w"}
ALL_MODES = "all modes"
MAX_PIXELS = 40_000_000  # larger uploads are refused before they are decoded
SPACE_DIR = Path(__file__).resolve().parents[2] / "spaces" / "stt-demo"


class DemoError(ValueError):
    """A problem with the demo's input (model, image) that the user can fix; shown as a message."""


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return array


def open_upload(path: str | os.PathLike | None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The uploaded file as a decoded image; DemoError naming the problem for anything else."""
    if path is None:
        raise DemoError("Upload an image first, or pick one of the examples.")
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                pixels = img.size[0] * img.size[1]  # from the header: nothing decoded yet
                if pixels > max_pixels:
                    raise DemoError(f"{name} is {img.size[0]}x{img.size[1]} pixels ({pixels / 1e6:.0f} MP); "
                                    f"this demo takes images up to {max_pixels / 1e6:.0f} MP. Resize it.")
                img.load()
                return img.copy()
    except DemoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DemoError(f"{name} has too many pixels ({err}). Resize it.") from err
    except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError, truncated data
        detail = "unknown file format" if isinstance(err, UnidentifiedImageError) else str(err)
        raise DemoError(f"{name} is not an image that can be read ({detail}). "
                        f"Upload a PNG, JPEG, WebP, BMP or GIF file.") from err


def example_images(folder: str | os.PathLike, fashion_items: int = 4,
                   extra: str | os.PathLike | None = None) -> list[str]:
    """Example files for the page: scikit-image's photos, Fashion-MNIST test items, images in `extra`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        import skimage.data

        for name in SKIMAGE_PHOTOS:
            path = folder / f"{name}.png"
            if not path.is_file():
                Image.fromarray(getattr(skimage.data, name)()).save(path)
            paths.append(path)
    except ImportError:
        pass
    paths += _fashion_mnist_examples(folder, fashion_items)
    if extra is not None and Path(extra).is_dir():
        seen = {p.name for p in paths}
        paths += sorted(p for p in Path(extra).iterdir()
                        if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.name not in seen)
    return [str(p) for p in paths]


def _fashion_mnist_examples(folder: Path, count: int) -> list[Path]:
    """The first test item of `count` different classes, when the Debian dataset is installed."""
    root = Path(os.environ.get(FASHION_MNIST_DIR_ENV) or DEFAULT_FASHION_MNIST_DIR)
    images, labels = (root / name for name in FASHION_MNIST_FILES["test"])
    if count <= 0 or not images.is_file() or not labels.is_file():
        return []
    x, y = read_idx(images), read_idx(labels)
    paths = []
    for label in range(min(count, len(FASHION_MNIST_CLASSES))):
        index = int(np.flatnonzero(y == label)[0])
        name = FASHION_MNIST_CLASSES[label].replace("/", "-").replace(" ", "_").lower()
        path = folder / f"fashion_mnist-{name}.png"
        if not path.is_file():
            Image.fromarray(x[index]).save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------

def build_demo(classifier: Classifier | None = None, captioner: Captioner | None = None, *,
               examples: list[str] | None = None, max_pixels: int = MAX_PIXELS, concurrency: int = 2,
               queue_size: int = 16):
    """The Gradio Blocks app; `launch()` it (with `show_error=True`) or let a Space run it."""
    import gradio as gr

    def read(payload) -> Image.Image:
        # The events take the raw upload (preprocess=False) so that a file Gradio cannot decode still
        # reaches open_upload, which says what is wrong with it.
        path = payload.get("path") if isinstance(payload, dict) else payload
        try:
            return open_upload(path, max_pixels)
        except DemoError as err:
            raise gr.Error(str(err), print_exception=False) from None

    def classify(payload, mode):
        image = read(payload)
        return classifier.predict(image), classifier.attention(image, mode)

    def redraw(payload, mode):
        if not payload:
            return None
        return classifier.attention(read(payload), mode)

    def caption(payload):
        return captioner.captions(read(payload))

    with gr.Blocks(title="STT attention demo") as demo:
        gr.Markdown("# STT attention: Synthesizing Tensor Transformations\n"
                    "Self-attention for CNN feature maps with one synthesized attention matrix per tensor "
                    "mode (channel, height, width), applied by mode products.")
        if classifier is not None and classifier.untrained:
            gr.Markdown(f"**Untrained weights.** `{classifier.name}` is freshly built: no trained model "
                        "was found (train one with `stt-hf train`, or pass `--model`), so its labels and "
                        "scores are meaningless; the attention maps show what the random synthesizers do.",
                        elem_id="untrained-banner")
        if classifier is not None:
            with gr.Tab("Classify"):
                count = len(classifier.blocks)
                gr.Markdown(f"Model: `{classifier.name}`, {len(classifier.labels)} classes, "
                            f"{count} STT block{'' if count == 1 else 's'}.")
                with gr.Row():
                    with gr.Column():
                        image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"],
                                         elem_id="classify-image")
                        mode = gr.Radio([*MODES, ALL_MODES], value="channel", label="attention mode",
                                        elem_id="attention-mode")
                        button = gr.Button("Classify", variant="primary", elem_id="classify-button")
                        if examples:
                            gr.Examples(examples, inputs=image, label="examples")
                    with gr.Column():
                        labels = gr.Label(num_top_classes=5, label="top-5 labels", elem_id="labels")
                        picture = gr.Image(label="STT attention (mean over heads)", type="numpy",
                                           interactive=False, elem_id="attention-picture")
                options = dict(preprocess=False, concurrency_limit=concurrency, concurrency_id="classify")
                button.click(classify, [image, mode], [labels, picture], **options)
                image.upload(classify, [image, mode], [labels, picture], **options)
                mode.change(redraw, [image, mode], picture, **options)
        if captioner is not None:
            with gr.Tab("Caption"):
                gr.Markdown(f"Captioner: `{captioner.name}`.")
                with gr.Row():
                    with gr.Column():
                        cap_image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"],
                                             elem_id="caption-image")
                        cap_button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                        if examples:
                            gr.Examples(examples, inputs=cap_image, label="examples")
                    with gr.Column():
                        greedy = gr.Textbox(label="greedy search", elem_id="caption-greedy")
                        beam = gr.Textbox(label="beam search", elem_id="caption-beam")
                cap_button.click(caption, cap_image, [greedy, beam], preprocess=False,
                                 concurrency_limit=1, concurrency_id="caption")
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    return demo


def create_demo(model: str | None = None, captioner: str | None = None, *, examples_dir=None,
                extra_examples=None, **kwargs):
    """Load the models (see `load_classifier`; a captioner when given, or the main job's when there is
    one) and build the page."""
    if model is not None and Path(model).is_dir() and is_captioner(model):
        classifier, captioner = None, captioner or model
    else:
        classifier = load_classifier(model)
    if captioner is None and model is None and is_captioner(MAIN_JOB_CAPTIONER):
        captioner = str(MAIN_JOB_CAPTIONER)
    loaded = load_captioner(captioner) if captioner else None
    if examples_dir is None:
        import tempfile

        examples_dir = Path(tempfile.gettempdir()) / "stt-hf-demo-examples"
    examples = example_images(examples_dir, extra=extra_examples)
    return build_demo(classifier, loaded, examples=examples, **kwargs)


# ---------------------------------------------------------------------------------------------------
# The Space
# ---------------------------------------------------------------------------------------------------

SPACE_PACKAGE_PATTERNS = ("*.py", "*.json", "*.md")


def stage_space(out: str | os.PathLike, *, model: str | None = None, captioner: str | None = None,
                space_dir: str | os.PathLike = SPACE_DIR) -> Path:
    """Assemble the Space's files in `out`: the Space folder, this package's source (the Space installs
    the dependencies from requirements.txt, not stt-hf itself), and the models under model/ and
    captioner/."""
    from ..reporting.publish import LOCAL_ONLY_PATTERNS, PUBLISHED_PATTERNS

    space_dir, out = Path(space_dir), Path(out)
    if not (space_dir / "app.py").is_file():
        raise FileNotFoundError(f"no Space folder at {space_dir} (it needs app.py); run from a source "
                                "checkout of stt-hf or pass --space_dir")
    shutil.copytree(space_dir, out, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "model", "captioner", "stt_hf"))
    package = Path(__file__).resolve().parents[1]  # the stt_hf package folder
    for pattern in SPACE_PACKAGE_PATTERNS:
        for src in package.rglob(pattern):
            if "__pycache__" not in src.parts:
                dst = out / "stt_hf" / src.relative_to(package)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    for folder, target in ((model, "model"), (captioner, "captioner")):
        if folder is None:
            continue
        folder = Path(folder)
        if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"{folder} has no model.safetensors + config.json to publish")
        import fnmatch

        for src in sorted(folder.rglob("*")):
            rel = src.relative_to(folder).as_posix()
            if (src.is_file() and any(fnmatch.fnmatch(rel, p) for p in PUBLISHED_PATTERNS)
                    and not any(fnmatch.fnmatch(rel, p) for p in LOCAL_ONLY_PATTERNS)):
                dst = out / target / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    return out


def push_space(repo_id: str, *, model: str | None = None, captioner: str | None = None,
               token: str | None = None, private: bool = False,
               space_dir: str | os.PathLike = SPACE_DIR) -> str:
    """Publish the demo as a Gradio Space `repo_id` (on the Hub of HF_ENDPOINT); return its URL."""
    import tempfile

    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        staged = stage_space(Path(tmp) / "space", model=model, captioner=captioner, space_dir=space_dir)
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private,
                                  exist_ok=True)
            api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=staged,
                              commit_message="Upload the STT attention demo")
        except Exception as err:  # network and HTTP errors both end here
            raise ConnectionError(f"push of the Space to {repo_id!r} failed: {err}") from err
    print(f"pushed the demo Space to {url}")
    return str(url)


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------

def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default=None,
                        help=f"classifier: checkpoint folder, Hub id or timm name (default: {MAIN_JOB_MODEL} "
                             f"when trained, else an untrained {FALLBACK_MODEL}); or a captioner folder")
    parser.add_argument("--captioner", default=None,
                        help=f"captioner folder (default: {MAIN_JOB_CAPTIONER} when trained and --model "
                             "is not given)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--max_pixels", type=_positive, default=MAX_PIXELS,
                        help="largest upload accepted, in pixels (default: %(default)s)")
    parser.add_argument("--concurrency", type=_positive, default=2,
                        help="classification requests run at once (default: %(default)s)")
    parser.add_argument("--queue_size", type=_positive, default=16,
                        help="requests that may wait; more are turned away (default: %(default)s)")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    demo = create_demo(args.model, args.captioner, max_pixels=args.max_pixels, concurrency=args.concurrency,
                       queue_size=args.queue_size)
    demo.launch(server_name=args.host, server_port=args.port, show_error=True)
    return 0


def add_space_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--repo_id", required=True, help="ORG/NAME of the Space")
    parser.add_argument("--model", default=None, help="classifier folder to ship with the Space")
    parser.add_argument("--captioner", default=None, help="captioner folder to ship with the Space")
    parser.add_argument("--space_dir", default=str(SPACE_DIR), help="the Space folder (default: %(default)s)")
    parser.add_argument("--token", default=None, help="default: HF_TOKEN or the stored login")
    parser.add_argument("--private", action="store_true")
    return parser


def run_push_space(args: argparse.Namespace) -> int:
    push_space(args.repo_id, model=args.model, captioner=args.captioner, token=args.token,
               private=args.private, space_dir=args.space_dir)
    return 0


def add_demo_parsers(subparsers) -> None:
    """Add `demo` and `push-space` to an argparse subparsers object (for the `stt-hf` command)."""
    demo = subparsers.add_parser("demo", help="serve the browser demo (classification, attention, captions)",
                                 description=__doc__.split("\n\n")[0])
    add_demo_arguments(demo).set_defaults(func=run_demo)
    space = subparsers.add_parser("push-space", help="publish the browser demo as a Hub Space")
    add_space_arguments(space).set_defaults(func=run_push_space)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stt-hf demo", description=__doc__.split("\n\n")[0])
    return run_demo(add_demo_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
