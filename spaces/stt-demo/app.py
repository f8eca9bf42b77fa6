"""The STT attention demo as a Hugging Face Space; `stt-hf push-space` uploads it with the stt_hf
package beside it and, when given, the model under model/ (and a captioner under captioner/).

Run it locally from a source checkout with `stt-hf demo`, or here with `python app.py`.
"""

import os
from pathlib import Path

from stt_hf.tasks.demo import create_demo

HERE = Path(__file__).resolve().parent


def shipped(name: str) -> str | None:
    """A model folder uploaded with the Space, if there is one."""
    folder = HERE / name
    return str(folder) if (folder / "config.json").is_file() else None


# STT_DEMO_MODEL (a Hub id or a timm name) overrides the shipped model; with neither, the page says
# the weights are untrained.
demo = create_demo(os.environ.get("STT_DEMO_MODEL") or shipped("model"), shipped("captioner"),
                   examples_dir=HERE / "examples_cache", extra_examples=HERE / "examples")

if __name__ == "__main__":
    demo.launch(show_error=True)
