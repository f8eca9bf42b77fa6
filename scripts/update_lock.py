"""Regenerate the lock from the current virtual environment: `python scripts/update_lock.py`.

- constraints.txt: `pip freeze` of the environment the suite passed in, minus stt-hf itself;
  scripts/setup_env.sh installs with `pip install -c constraints.txt`.
- spaces/stt-demo/requirements.txt: what the demo Space installs, pinned to the same versions, and the
  Space card's `sdk_version` (the Gradio version).

tests/test_lock.py fails when pyproject.toml, the lock and the Space disagree.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
SPACE = ROOT / "spaces" / "stt-demo"
# What the Space installs: stt-hf's own dependencies (its source is uploaded beside app.py) and the demo's.
SPACE_PACKAGES = ("torch", "torchvision", "timm", "transformers", "huggingface_hub", "safetensors",
                  "datasets", "evaluate", "accelerate", "pyyaml", "matplotlib", "pillow", "scipy",
                  "tokenizers", "scikit-image", "gradio")
HEADER = """\
# The exact versions the test suite passed with (pip freeze of .venv, minus stt-hf itself).
# Install with: pip install -c constraints.txt -e ".[test,data,caption,export,demo]"
# Regenerate with: python scripts/update_lock.py   (tests/test_lock.py checks it against pyproject.toml)
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def freeze() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable", "--exclude", "stt-hf"],
                         capture_output=True, text=True, check=True).stdout
    lines = [line.strip() for line in out.splitlines() if "==" in line and not line.startswith("#")]
    return sorted(lines, key=lambda line: canonical(line.split("==")[0]))


def main() -> None:
    pins = freeze()
    LOCK.write_text(HEADER + "\n".join(pins) + "\n")
    versions = {canonical(line.split("==")[0]): line.split("==")[1] for line in pins}
    missing = [p for p in SPACE_PACKAGES if canonical(p) not in versions]
    if missing:
        sys.exit(f"not installed, so not pinned: {', '.join(missing)} (install the demo extra first)")
    (SPACE / "requirements.txt").write_text(
        "# What the Space installs, at the versions of ../../constraints.txt (scripts/update_lock.py).\n"
        + "".join(f"{p}=={versions[canonical(p)]}\n" for p in SPACE_PACKAGES))
    card = SPACE / "README.md"
    card.write_text(re.sub(r"(?m)^sdk_version: .*$", f"sdk_version: {versions['gradio']}", card.read_text()))
    print(f"wrote {LOCK.relative_to(ROOT)} ({len(pins)} pins) and {SPACE.relative_to(ROOT)}/requirements.txt")


if __name__ == "__main__":
    main()
