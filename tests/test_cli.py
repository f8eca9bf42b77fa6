"""Command-line manners: every subcommand turns a bad input into two lines on stderr (the problem, then
the fix) and exit code 2, with no traceback unless --debug or STT_HF_DEBUG=1. Nothing here trains:
each error is raised before training starts."""

from __future__ import annotations

import os
import subprocess
import sys

import huggingface_hub.constants
import pytest
from PIL import Image, UnidentifiedImageError

from stt_hf.cli import main

OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE


@pytest.fixture
def bad(tmp_path):
    """Real bad inputs on disk."""
    folder = tmp_path / "imagefolder"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / label / f"{i}.png")
    (folder / "cat" / "empty.png").write_bytes(b"")  # an image file with nothing in it
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    return dict(imagefolder=str(folder), text=str(text), missing=str(tmp_path / "missing"), model=str(model),
                out=str(tmp_path / "out"))


def run_cli(capsys, argv):
    """(exit code, stderr lines from the first "error:" one) of `stt-hf ARGV`; SystemExit (argparse)
    counts as an exit code. What comes before the error (progress bars of loading data) is dropped."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    lines = capsys.readouterr().err.strip().splitlines()
    first = next((i for i, line in enumerate(lines) if "error:" in line), 0)
    return code, lines[first:]


CASES = {
    # id: (argv with {placeholders} from `bad`, words the message must name)
    "models-no-match": (["models", "--filter", "nope*"], ["no registered model matches", "nope*"]),
    "train-unreadable-image": (["train", "--dataset", "{imagefolder}", "--output_dir", "{out}"],
                               ["empty.png", "not a readable image"]),
    "train-missing-dataset": (["train", "--dataset", "{missing}", "--output_dir", "{out}"],
                              ["missing", "fix: check the path"]),
    "train-rejected-arguments": (
        ["train", "--eval_strategy", "steps", "--save_strategy", "steps", "--save_steps", "20",
         "--eval_steps", "40", "--output_dir", "{out}"],
        ["load_best_model_at_end", "round multiple"]),
    "train-bad-flag-value": (["train", "--learning_rate", "fast"],
                             ["--learning_rate", "invalid float value"]),
    "train-unknown-flag": (["train", "--epochs", "3"], ["not used", "--epochs"]),
    "train-caption-missing-dataset": (["train-caption", "--dataset", "{missing}", "--output_dir", "{out}"],
                                      ["missing", "fix: check the path"]),
    "train-caption-rejected-arguments": (
        ["train-caption", "--eval_strategy", "steps", "--save_strategy", "steps", "--save_steps", "20",
         "--eval_steps", "40", "--load_best_model_at_end", "true", "--output_dir", "{out}"],
        ["round multiple"]),
    "eval-missing-checkpoint": (["eval", "--model", "{missing}"], ["no such checkpoint folder"]),
    "eval-caption-missing-checkpoint": (["eval-caption", "--model", "{missing}"],
                                        ["no such checkpoint folder"]),
    "eval-caption-negative-ngram": (["eval-caption", "--model", "{model}", "--no_repeat_ngram_size", "-1"],
                                    ["--no_repeat_ngram_size must be 0 (no limit) or a positive"]),
    "train-caption-negative-ngram": (["train-caption", "--no_repeat_ngram_size", "-2",
                                      "--output_dir", "{out}"],
                                     ["--no_repeat_ngram_size must be 0 (no limit) or a positive"]),
    "convert-missing-checkpoint": (["convert", "{missing}", "{out}", "--model-name", "stt_resnet10_s"],
                                   ["no checkpoint at"]),
    "bench-bad-value": (["bench", "--batch_sizes", "0"], ["--batch_sizes must be positive"]),
    "visualize-unreadable-image": (["visualize", "--model", "stt_resnet10_s", "--image", "{text}"],
                                   ["cannot identify image file", "fix: give an image file"]),
    "visualize-unknown-model": (["visualize", "--model", "stt_resnet_nonsense"], ["neither a registered"]),
    "push-missing-folder": (["push", "{missing}", "--repo_id", "org/name"], ["no model.safetensors"]),
    "demo-unknown-model": (["demo", "--model", "stt_resnet_nonsense"], ["neither a registered"]),
    "demo-bad-port": (["demo", "--port", "70000"], ["--port must be in 1..65535"]),
    "demo-bad-limit": (["demo", "--max_pixels", "0"], ["--max_pixels", "must be a positive integer"]),
    "push-space-missing-model": (["push-space", "--repo_id", "org/space", "--model", "{missing}"],
                                 ["no model.safetensors"]),
    "unknown-command": (["trian"], ["invalid choice", "trian"]),
}
if OFFLINE:
    CASES.update({
        "train-hub-dataset-offline": (["train", "--dataset", "org/data", "--output_dir", "{out}"],
                                      ["org/data", "HF_HUB_OFFLINE"]),
        "eval-hub-model-offline": (["eval", "--model", "org/model"], ["HF_HUB_OFFLINE"]),
        "push-offline": (["push", "{model}", "--repo_id", "org/name"], ["org/name", "HF_HUB_OFFLINE"]),
        "push-space-offline": (["push-space", "--repo_id", "org/space"], ["org/space", "HF_HUB_OFFLINE"]),
    })


@pytest.mark.parametrize("case", list(CASES))
def test_expected_error_is_two_lines_and_exit_code_2(case, bad, capsys):
    argv, words = CASES[case]
    code, lines = run_cli(capsys, [a.format(**bad) for a in argv])
    text = "\n".join(lines)
    assert code == 2, text
    assert 1 <= len(lines) <= 2 and "error:" in lines[0], text
    assert "Traceback" not in text
    for word in words:
        assert word.lower() in text.lower(), f"{word!r} not in:\n{text}"


def test_checks_run_before_training(bad, capsys):
    """The unreadable image is found while loading the data: no output folder, no checkpoint."""
    code, _ = run_cli(capsys, ["train", "--dataset", bad["imagefolder"], "--output_dir", bad["out"]])
    assert code == 2 and not os.path.exists(bad["out"])


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_debug_shows_the_traceback(where, bad, capsys, monkeypatch):
    argv = ["visualize", "--model", "stt_resnet10_s", "--image", bad["text"]]
    if where == "before":
        argv = ["--debug", *argv]
    elif where == "after":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("STT_HF_DEBUG", "1")
    with pytest.raises(UnidentifiedImageError):
        main(argv)


def test_debug_before_a_trainer_command(bad):
    """train's own --debug is a TrainingArguments flag, so the CLI's goes before the command."""
    with pytest.raises(ValueError, match="round multiple"):
        main(["--debug", "train", "--eval_strategy", "steps", "--save_strategy", "steps",
              "--save_steps", "20", "--eval_steps", "40", "--output_dir", bad["out"]])


def test_a_bug_is_not_disguised_as_a_user_error(monkeypatch):
    """An ImportError inside stt-hf is a bug: it keeps its traceback."""
    import stt_hf.cli as cli

    def broken(args):
        from stt_hf.layers import no_such_name  # noqa: F401

    monkeypatch.setattr(cli, "_models", broken)
    with pytest.raises(ImportError):
        main(["models"])


def test_console_command_prints_no_traceback(bad):
    """The real process: exit status 2 and two lines on stderr."""
    env = dict(os.environ, STT_HF_DEBUG="0")
    proc = subprocess.run([sys.executable, "-m", "stt_hf.cli", "visualize", "--model", "stt_resnet10_s",
                           "--image", bad["text"]], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines[0].startswith("stt-hf visualize: error: cannot identify image file"), proc.stderr
    assert lines[1].startswith("  fix: give an image file") and len(lines) == 2, proc.stderr
