"""`stt-hf push-space`: the demo as a Hugging Face Space, staged with this package's source and the
models, then uploaded."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

SPACE_DIR = Path(__file__).resolve().parents[2] / "spaces" / "stt-demo"
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
