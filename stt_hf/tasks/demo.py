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
an image, too many pixels) is answered with a message in the page. The example images and Gradio's copies
of the files it serves live in private folders of their own (see `demo_inputs`).

The models and their pictures are in `demo_models`, uploads and examples in `demo_inputs`, the Space in
`demo_space`; this module is the page and the `stt-hf demo` command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PIL import Image

from .demo_inputs import MAX_PIXELS, DemoError, example_images, open_upload, private_folder
from .demo_models import (
    ALL_MODES,
    FALLBACK_MODEL,
    MAIN_JOB_CAPTIONER,
    MAIN_JOB_MODEL,
    MODES,
    Captioner,
    Classifier,
    is_captioner,
    load_captioner,
    load_classifier,
)
from .demo_space import add_space_arguments, run_push_space

GRADIO_TEMP_DIR_ENV = "GRADIO_TEMP_DIR"  # where Gradio copies the files it serves


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
    examples = example_images(examples_dir, extra=extra_examples)  # None: a new private folder
    return build_demo(classifier, loaded, examples=examples, **kwargs)


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
    if not os.environ.get(GRADIO_TEMP_DIR_ENV):  # Gradio's default: a fixed folder in the shared temp dir
        os.environ[GRADIO_TEMP_DIR_ENV] = str(private_folder("stt-hf-demo-gradio-"))
    demo = create_demo(args.model, args.captioner, max_pixels=args.max_pixels, concurrency=args.concurrency,
                       queue_size=args.queue_size)
    demo.launch(server_name=args.host, server_port=args.port, show_error=True)
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
