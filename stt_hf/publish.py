"""Writing a run's outputs (atomically) and publishing them to a Hugging Face Hub."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# Files a published model folder carries; checkpoints and optimizer state stay local.
PUBLISHED_PATTERNS = ["*.safetensors", "*.json", "*.py", "*.md", "*.png", "*.txt", "tokenizer*"]


def atomic_save(output_dir: str | Path, *savers) -> list[Path]:
    """Run each `saver(tmp_dir)` into a scratch folder, then move the files into place.

    Each file lands with os.replace, so an interrupted save leaves either the old file or the
    complete new one, never a half-written model.safetensors.
    """
    output_dir = Path(output_dir)
    tmp = output_dir / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for save in savers:
        save(tmp)
    moved = []
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            target = output_dir / path.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved.append(target)
    shutil.rmtree(tmp, ignore_errors=True)
    return moved


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def plot_training_curves(log_history: list[dict], path: str | Path) -> Path:
    """Training loss and validation loss/accuracy against the global step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h.get("eval_loss"), h.get("eval_accuracy")) for h in log_history
             if "eval_loss" in h]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train), label="train loss")
    if evals:
        steps, losses, accs = zip(*evals)
        ax_loss.plot(steps, losses, "o-", label="validation loss")
        if all(a is not None for a in accs):
            ax_acc.plot(steps, accs, "o-", color="tab:green", label="validation accuracy")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
