"""What stt-hf promises when things go wrong: a run owns its output folder and never replaces an earlier
run's results unasked; `--seed` decides the weights; `convert` never writes its source; one pickle
policy; every anticipated error is one error line plus a fix (exit code 2, no traceback), raised before
any work. The table at the end runs every subcommand through bad values in-process (milliseconds a row)
and checks that nothing on disk changed: the next bad value someone finds is one line there."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from stt_hf.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
# A tiny but real classifier run: 32 mnist_5k digits, one optimizer step, nothing evaluated mid-run.
TINY = ["--dataset", "mnist_5k", "--max_train_samples", "32", "--max_eval_samples", "16",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16", "--max_steps", "1",
        "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
        "--warmup_steps", "0", "--disable_tqdm", "true"]
NARROW = '{"small_input": false, "channels": [8, 16, 32, 64]}'
SEG_TINY = ["--scenes_train", "16", "--scenes_validation", "8", "--scenes_test", "8", "--scenes_canvas", "32",
            "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--max_steps", "1",
            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--warmup_steps", "0", "--hidden_size", "16", "--model_kwargs", NARROW, "--disable_tqdm", "true"]
CAPTION_TINY = ["--dataset", "tuxpaint", "--max_train_samples", "16", "--max_eval_samples", "4",
                "--img_size", "32", "--encoder_kwargs", '{"channels": [8, 16, 32, 64]}',
                "--hidden_size", "32",
                "--decoder_layers", "1", "--decoder_heads", "2", "--vocab_size", "300",
                "--max_caption_length", "8", "--per_device_train_batch_size", "8", "--max_steps", "1",
                "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                "--generation_num_beams", "1", "--warmup_steps", "0", "--disable_tqdm", "true"]


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `stt-hf ARGV` in this process; argparse's SystemExit counts."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def error_lines(text: str) -> list[str]:
    lines = text.strip().splitlines()
    first = next((i for i, line in enumerate(lines) if "error:" in line), 0)
    return lines[first:]


def assert_one_error(code: int, text: str, *words: str) -> None:
    """Exit code 2, no traceback, the error on one line (then at most the fix), naming `words`."""
    lines = error_lines(text)
    assert code == 2, text
    assert "Traceback" not in text, text
    assert 1 <= len(lines) <= 2 and "error:" in lines[0], text
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in: {lines[0]}"


def disk_state(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under `roots`: size, modification time and mode (what a write changes)."""
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            info = path.stat()
            state[str(path)] = (path.is_dir(), info.st_size, info.st_mtime_ns, info.st_mode)
    return state


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def write_imagefolder(root: Path, classes=("cat", "dog"), per_class: int = 3, size: int = 8) -> Path:
    for label in classes:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), (40 * i, 10 * len(label), 0)).save(root / label / f"{i}.png")
    return root


# ------------------------------------------------------------------------- saved folders of every kind


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Real saved folders: a 10-class classifier, a segmenter, a captioner, a timm-format model, a
    transformers ResNet, a folder without config.json, and image folders of two classes and one; the
    weights of a plugged timm model (stt_convnext_s) and a plugged classifier whose trunk no registered
    name builds."""
    import timm
    from transformers import ResNetConfig, ResNetForImageClassification

    import stt_hf
    from stt_hf.hf.captioning import build_captioner, train_caption_tokenizer
    from stt_hf.hf.convert import save_timm_format
    from stt_hf.hf.modeling_stt_seg import build_segmenter

    root = tmp_path_factory.mktemp("saved")
    paths = {name: root / name for name in ("classifier", "segmenter", "captioner", "timm_format",
                                            "hf_resnet", "no_config")}
    config = stt_hf.SttConfig.from_timm_name("stt_resnet10_s", num_labels=10, img_size=28)
    stt_hf.SttForImageClassification(config).save_pretrained(paths["classifier"])
    build_segmenter("stt_resnet10_s", labels=["bg", "a", "b"], hidden_size=16, img_size=32, small_input=False,
                    channels=[8, 16, 32, 64]).save_pretrained(paths["segmenter"])
    tokenizer = train_caption_tokenizer(["a red cat", "a blue dog"] * 8, vocab_size=300, model_max_length=8)
    captioner = build_captioner("stt_resnet10_s", tokenizer, encoder_kwargs=dict(img_size=32, hidden_size=32),
                                decoder_kwargs=dict(layers=1, heads=2, hidden_size=32, max_positions=16))
    captioner.save_pretrained(paths["captioner"])
    tokenizer.save_pretrained(paths["captioner"])
    save_timm_format(timm.create_model("stt_resnet10_s", num_classes=3), paths["timm_format"])
    resnet = ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], num_labels=2)
    ResNetForImageClassification(resnet).save_pretrained(paths["hf_resnet"])
    paths["no_config"].mkdir()
    torch.save({"w": torch.zeros(1)}, paths["no_config"] / "pytorch_model.bin")
    paths["plugged_weights"] = root / "stt_convnext_s.safetensors"
    save_file(timm.create_model("stt_convnext_s", num_classes=3).state_dict(), paths["plugged_weights"])
    paths["plugged_custom"] = root / "plugged_custom"
    attention = dict(attn_layer="stt", places={3: "after"}, img_size=32,
                     options=dict(reduction=4, min_channels=8))
    trunk_args = dict(patch_size=1, dims=[8, 16, 32, 64])
    custom = stt_hf.SttPluginConfig(trunk="convnext_atto", trunk_args=trunk_args,
                                    attention=attention, img_size=32, num_labels=2)
    stt_hf.SttPluginForImageClassification(custom).save_pretrained(paths["plugged_custom"])
    paths["images"] = write_imagefolder(root / "images")
    paths["one_class"] = write_imagefolder(root / "one_class", classes=("cat",))
    paths["text"] = root / "notes.png"
    paths["text"].write_text("not an image")
    return {k: Path(v) for k, v in paths.items()}


# ----------------------------------------------------------------------------------- 1: output folders


def test_a_busy_output_folder_is_refused_at_once_naming_the_holder(tmp_path, capsys):
    from stt_hf.reporting.run_folder import claim_output_dir

    out = tmp_path / "run"
    with claim_output_dir(out, command="stt-hf train --output_dir run (the other run)"):
        code, text = run_cli(capsys, ["train", *TINY, "--output_dir", out])
        assert_one_error(code, text, "in use by another run", f"pid {os.getpid()}", "(the other run)")
        assert sorted(p.name for p in out.iterdir()) == [".stt-hf.lock"]  # nothing of a second run


def test_two_processes_into_one_folder_one_is_refused(tmp_path):
    """The lock is the operating system's: a second process gets the error while the first holds it."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from stt_hf.reporting.run_folder import claim_output_dir; "
         f"lock = claim_output_dir({str(out)!r}, command='holder'); print('held', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run([sys.executable, "-m", "stt_hf.cli", "train", *TINY, "--output_dir", str(out)],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "STT_HF_DEBUG": "0"})
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2 and "in use by another run" in proc.stderr and "holder" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "model.safetensors").exists()


def earlier_run(folder: Path) -> dict[str, tuple]:
    """A folder holding an earlier run's results: its model, config and two checkpoints."""
    for name in ("checkpoint-50", "checkpoint-60"):
        (folder / name).mkdir(parents=True)
        (folder / name / "model.safetensors").write_bytes(b"earlier checkpoint " + name.encode())
    (folder / "model.safetensors").write_bytes(b"earlier model")
    (folder / "config.json").write_text('{"earlier": true}')
    return disk_state(folder)


@pytest.mark.parametrize("command", ["train", "train-seg", "train-caption"])
def test_an_earlier_runs_results_are_never_replaced_unasked(command, tmp_path, capsys):
    out = tmp_path / "run"
    before = earlier_run(out)
    code, text = run_cli(capsys, [command, "--output_dir", out])
    assert_one_error(code, text, "holds an earlier run's results", "checkpoint-50", "--overwrite_output_dir")
    assert disk_state(out) == before


def test_overwrite_output_dir_replaces_the_earlier_run(tmp_path, capsys):
    out = tmp_path / "run"
    earlier_run(out)
    code, text = run_cli(capsys, ["train", *TINY, "--output_dir", out, "--overwrite_output_dir", "true"])
    assert code == 0, text
    assert not list(out.glob("checkpoint-*"))  # the earlier run's checkpoints went with it
    assert json.loads((out / "config.json").read_text())["model_type"] == "stt"
    assert not (out / ".stt-hf.lock").exists()  # released at the end


# ----------------------------------------------------------------------------------- 2: --config


def test_config_equals_file_is_read_and_unknown_keys_are_refused(tmp_path, capsys):
    from stt_hf.tasks import train

    config = tmp_path / "run.json"
    config.write_text(json.dumps({"learning_rate": 0.123, "img_size": 20}))
    model_args, _, training_args = train.parse_args([f"--config={config}", "--output_dir", str(tmp_path)])
    assert training_args.learning_rate == 0.123 and model_args.img_size == 20
    config.write_text(json.dumps({"learning_rate": 0.1, "epochs": 3, "lr": 1}))
    code, text = run_cli(capsys, ["train", "--config", config, "--output_dir", tmp_path / "out"])
    assert_one_error(code, text, "unknown keys ['epochs', 'lr']")
    code, text = run_cli(capsys, ["train", "--output_dir", tmp_path / "out", "--config"])
    assert_one_error(code, text, "--config", "expected one argument")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


# ----------------------------------------------------------------------------------- 3: --seed


def train_twice(run, args: list[str], tmp_path: Path, seeds=(7, 7, 8)) -> list[dict[str, torch.Tensor]]:
    found = []
    for i, seed in enumerate(seeds):
        out = tmp_path / f"seed{seed}-{i}"
        run([*args, "--seed", str(seed), "--output_dir", str(out)])
        found.append(weights(out))
    return found


def assert_seed_decides(found: list[dict[str, torch.Tensor]]) -> None:
    first, again, other = found
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first), "one seed, different weights"
    assert any(not torch.equal(first[k], other[k]) for k in first), "another seed, the same weights"


def test_seed_makes_train_repeatable(tmp_path):
    from stt_hf.tasks import train

    assert_seed_decides(train_twice(train.main, TINY, tmp_path))


def test_seed_makes_train_seg_repeatable(tmp_path):
    from stt_hf.tasks import train_seg

    assert_seed_decides(train_twice(train_seg.main, SEG_TINY, tmp_path))


@pytest.mark.slow
def test_seed_makes_train_caption_repeatable(tmp_path):
    from stt_hf.tasks import train_caption

    assert_seed_decides(train_twice(train_caption.main, CAPTION_TINY, tmp_path))


# ----------------------------------------------------------------------------------- 4: convert in place


def test_convert_never_writes_its_source(saved, tmp_path, capsys):
    import shutil

    import stt_hf

    folder = tmp_path / "model"
    shutil.copytree(saved["classifier"], folder)
    before = disk_state(folder)
    for dst in (folder, folder / "timm"):
        code, text = run_cli(capsys, ["convert", folder, dst])
        assert_one_error(code, text, "is the source folder")
    assert disk_state(folder) == before
    stt_hf.SttForImageClassification.from_pretrained(folder)  # still loads


def test_convert_does_not_replace_a_model_unasked(saved, tmp_path, capsys):
    out = tmp_path / "timm"
    assert run_cli(capsys, ["convert", saved["classifier"], out])[0] == 0
    before = disk_state(out)
    code, text = run_cli(capsys, ["convert", saved["classifier"], out])
    assert_one_error(code, text, "already holds a model", "--overwrite")
    assert disk_state(out) == before
    assert run_cli(capsys, ["convert", saved["classifier"], out, "--overwrite"])[0] == 0


# ----------------------------------------------------------------------------------- 6: eval class count


def test_eval_refuses_a_dataset_with_another_class_count(saved, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code, text = run_cli(capsys, ["eval", "--model", saved["classifier"], "--dataset", saved["images"],
                                  "--output", out])
    assert_one_error(code, text, "predicts 10 classes", "the dataset has 2")
    assert not out.exists()


# ----------------------------------------------------------------------------------- 7: image errors


def test_a_corrupt_image_found_mid_training_is_named(tmp_path, capsys):
    """A truncated PNG among the rows the up-front check does not decode still fails with its file name."""
    from stt_hf.data.classification import load_image_dataset

    images = write_imagefolder(tmp_path / "images", per_class=40, size=12)
    dsd = load_image_dataset(str(images), val_fraction=0.1, seed=42)
    checked = {int(i) for i in torch.linspace(0, len(dsd["train"]) - 1, 16).round().tolist()}
    raw = dsd["train"].cast_column("image", __import__("datasets").Image(decode=False))
    row = next(r for r in range(len(raw)) if not {r - 1, r, r + 1} & checked)
    victim = Path(raw[row]["image"]["path"])
    noise = torch.randint(0, 256, (12, 12, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    Image.fromarray(noise.numpy()).save(victim)
    victim.write_bytes(victim.read_bytes()[:300])  # the header and part of the pixels: a truncated file
    code, text = run_cli(capsys, ["train", "--dataset", images, "--output_dir", tmp_path / "out",
                                  "--img_size", "16", "--per_device_train_batch_size", "128",
                                  "--max_steps", "1",
                                  "--eval_strategy", "no", "--save_strategy", "no",
                                  "--load_best_model_at_end", "false", "--disable_tqdm", "true"])
    assert_one_error(code, text, str(victim), "not a readable image")


# ----------------------------------------------------------------------------------- 8: one error path


def test_stt_debug_shows_the_traceback_of_a_trainer_command(tmp_path):
    """train's own --debug belongs to TrainingArguments; --stt_debug works anywhere on the line."""
    with pytest.raises(ValueError, match="--img_size must be a positive"):
        main(["train", "--output_dir", str(tmp_path), "--img_size", "0", "--stt_debug"])


def test_the_fix_hint_names_a_switch_the_command_accepts(tmp_path, capsys):
    code, text = run_cli(capsys, ["train", "--output_dir", tmp_path, "--model_kwargs", "[1, 2]"])
    assert_one_error(code, text, "--model_kwargs")
    assert "--stt_debug" in text and "--debug or" not in text


def test_a_full_disk_at_the_final_save_is_one_line_and_leaves_no_scratch_folder(tmp_path):
    """A real write failure (the file-size limit of the process, as a full disk fails a write): the save
    fails with one line and exit 2, the scratch folder is gone and the earlier model is unchanged."""
    out = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "stt_hf.cli", "train", *TINY, "--output_dir", str(out)],
                           capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
                           env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert first.returncode == 0, first.stderr[-2000:]
    before = (out / "model.safetensors").read_bytes()

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = subprocess.run([sys.executable, "-m", "stt_hf.cli", "train", *TINY, "--output_dir", str(out),
                           "--overwrite_output_dir", "true"], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=600, preexec_fn=small_files,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "STT_HF_DEBUG": "0"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "writing to" in proc.stderr, proc.stderr[-2000:]
    assert not (out / ".saving").exists()
    assert (out / "model.safetensors").read_bytes() == before


# ----------------------------------------------------------------------------------- 9: pickle policy


@pytest.fixture
def pickle_folders(saved, tmp_path):
    """The timm-format and the transformers-format model with pytorch_model.bin instead of safetensors."""
    import shutil

    folders = {}
    for name in ("timm_format", "classifier"):
        folder = tmp_path / name
        shutil.copytree(saved[name], folder)
        torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
        folders[name] = folder
    return folders


def test_timm_from_pretrained_reads_pickles_only_when_allowed(pickle_folders, saved):
    from stt_hf import timm_from_pretrained
    from stt_hf.hf.checkpoints import CheckpointError

    for folder in pickle_folders.values():
        with pytest.raises(CheckpointError, match="allow_pickle"):
            timm_from_pretrained(folder)
        model = timm_from_pretrained(folder, allow_pickle=True)
        reference = timm_from_pretrained(saved[folder.name])
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                     reference.state_dict().values(), strict=True))


def test_convert_and_visualize_honour_the_pickle_flag(pickle_folders, tmp_path, capsys):
    source = pickle_folders["classifier"]
    code, text = run_cli(capsys, ["convert", source, tmp_path / "refused"])
    assert_one_error(code, text, "pickle", "--allow-pickle")
    code, text = run_cli(capsys, ["convert", source, tmp_path / "timm", "--allow-pickle"])
    assert code == 0, text
    assert (tmp_path / "timm" / "model.safetensors").is_file()
    code, text = run_cli(capsys, ["visualize", "--model", source, "--out", tmp_path / "a.png"])
    assert_one_error(code, text, "pickle")
    code, text = run_cli(capsys, ["visualize", "--model", source, "--out", tmp_path / "a.png",
                                  "--allow_pickle"])
    assert code == 0, text


# ----------------------------------------------------------------------------------- 12: library


def test_an_empty_batch_goes_through_every_attention_module_and_model():
    import timm

    from stt_hf.layers.create import ATTN_FACTORIES, create_attn

    for name in ATTN_FACTORIES:
        for training in (False, True):
            module = create_attn(name, 32, (6, 6)).train(training)
            assert module(torch.zeros(0, 32, 6, 6)).shape == (0, 32, 6, 6), name
    for name in timm.list_models("stt_*"):
        model = timm.create_model(name, num_classes=10).eval()
        with torch.no_grad():
            assert model(torch.zeros(0, 3, 32, 32)).shape == (0, 10), name


def test_an_empty_batch_through_the_transformers_classifier():
    import stt_hf

    model = stt_hf.SttForImageClassification(stt_hf.SttConfig.from_timm_name("stt_resnet10_s", num_labels=4))
    with torch.no_grad():
        assert model(torch.zeros(0, 3, 32, 32)).logits.shape == (0, 4)


@pytest.mark.parametrize("feat_size", [0, -3, (4, 0), (4, 4, 4)])
def test_feat_size_is_checked_at_construction(feat_size):
    from stt_hf.layers.baselines import FlatSynthesizer
    from stt_hf.layers.stt import STT

    for module in (STT, FlatSynthesizer):
        with pytest.raises(ValueError, match="feat_size must be a positive int"):
            module(64, feat_size=feat_size)


def test_checkpoints_and_convert_outputs_have_the_usual_file_mode(saved, tmp_path, capsys):
    from stt_hf.hf.checkpoints import default_file_mode
    from stt_hf.tasks import train

    out = tmp_path / "run"
    train.main([*TINY, "--save_strategy", "steps", "--save_steps", "1", "--output_dir", str(out)])
    converted = tmp_path / "timm"
    assert run_cli(capsys, ["convert", saved["classifier"], converted])[0] == 0
    files = [*(out / "checkpoint-1").rglob("*"), *converted.rglob("*")]
    modes = {str(p): oct(p.stat().st_mode & 0o777) for p in files if p.is_file()}
    assert modes and set(modes.values()) == {oct(default_file_mode())}, modes


def test_timm_from_pretrained_names_a_folder_of_another_model(saved):
    from stt_hf import timm_from_pretrained

    with pytest.raises(ValueError, match="holds a 'resnet' model; expected an STT classifier"):
        timm_from_pretrained(saved["hf_resnet"])


# ----------------------------------------------------------------------------------- the table

# (argv with {placeholders} from the `saved` folders and {tmp}, words the error line must name).
# Rows run in this process and fail before any work: a row costs milliseconds.
BAD_VALUES = {
    "train": [
        (["--model_kwargs", "[1,2]"], ["--model_kwargs", "JSON list"]),
        (["--model_kwargs", "{{bad"], ["--model_kwargs", "not valid JSON"]),
        (["--config"], ["--config", "expected one argument"]),
        (["--config", "{tmp}/missing.yaml"], ["--config", "no such file"]),
        (["--num_train_epochs", "0"], ["--num_train_epochs must be positive"]),
        (["--num_train_epochs", "-1"], ["--num_train_epochs must be positive"]),
        (["--max_steps", "-5"], ["--max_steps must be a positive"]),
        (["--max_steps", "0"], ["--max_steps must be a positive"]),
        (["--img_size", "0"], ["--img_size must be a positive"]),
        (["--per_device_train_batch_size", "0"], ["--per_device_train_batch_size"]),
        (["--max_train_samples", "0"], ["--max_train_samples"]),
        (["--resume_from_checkpoint", "latest"], ["holds no complete checkpoint"]),
        (["--resume_from_checkpoint", "{tmp}/nowhere"], ["no such checkpoint folder"]),
        (["--dataset", "{one_class}"], ["one class folder", "cat"]),
        (["--dataset", "./no/such/folder"], ["no such folder"]),
        (["--learning_rate", "fast"], ["--learning_rate", "invalid float"]),
        (["--epochs", "3"], ["--epochs"]),
    ],
    "train-caption": [
        (["--encoder_kwargs", "[1]"], ["--encoder_kwargs", "JSON list"]),
        (["--max_caption_length", "0"], ["--max_caption_length must be a positive"]),
        (["--generation_num_beams", "0"], ["--generation_num_beams"]),
        (["--decoder_heads", "0"], ["--decoder_heads"]),
        (["--num_train_epochs", "0"], ["--num_train_epochs must be positive"]),
        (["--resume_from_checkpoint", "latest"], ["holds no complete checkpoint"]),
        (["--config"], ["--config", "expected one argument"]),
    ],
    "train-seg": [
        (["--model_kwargs", "[1]"], ["--model_kwargs", "JSON list"]),
        (["--hidden_size", "0"], ["--hidden_size must be a positive"]),
        (["--img_size", "0"], ["--img_size must be a positive"]),
        (["--scenes_train", "-1"], ["--scenes_train"]),
        (["--max_steps", "-5"], ["--max_steps must be a positive"]),
        (["--resume_from_checkpoint", "latest"], ["holds no complete checkpoint"]),
    ],
    "eval": [
        (["--model", "{segmenter}"], ["holds a segmenter", "expected an STT classifier"]),
        (["--model", "{captioner}"], ["holds a captioner"]),
        (["--model", "{timm_format}"], ["holds a timm-format"]),
        (["--model", "{hf_resnet}"], ["holds a 'resnet' model"]),
        (["--model", "{no_config}"], ["no config.json"]),
        (["--model", "{tmp}/missing"], ["no such checkpoint folder"]),
        (["--model", "{classifier}", "--output", "{tmp}"], ["--output", "is a folder"]),
        (["--model", "{classifier}", "--batch_size", "0"], ["--batch_size must be a positive"]),
        (["--model", "{classifier}", "--max_eval_samples", "0"], ["--max_eval_samples"]),
    ],
    "eval-caption": [
        (["--model", "{captioner}", "--num_beams", "0"], ["--num_beams must be a positive"]),
        (["--model", "{captioner}", "--batch_size", "0"], ["--batch_size must be a positive"]),
        (["--model", "{captioner}", "--output", "{tmp}/scores.txt"], ["--output", "ending in .json"]),
        (["--model", "{classifier}"], ["holds an STT classifier", "expected a captioner"]),
        (["--model", "{segmenter}"], ["holds a segmenter"]),
    ],
    "eval-seg": [
        (["--model", "{classifier}"], ["holds an STT classifier", "expected a segmenter"]),
        (["--model", "{captioner}"], ["holds a captioner"]),
        (["--model", "{segmenter}", "--batch_size", "0"], ["--batch_size must be a positive"]),
        (["--model", "{segmenter}", "--overlay", "{tmp}"], ["--overlay", "is a folder"]),
        (["--model", "{segmenter}", "--overlay_count", "0"], ["--overlay_count"]),
    ],
    "export-onnx": [
        (["stt_resnet10_s", "{tmp}/m.onnx", "--opset", "5"], ["opset must be in 18.."]),
        (["stt_resnet10_s", "{tmp}/m.onnx", "--opset", "99"], ["opset must be in 18.."]),
        (["stt_resnet10_s", "{tmp}/m.onnx", "--img_size", "0"], ["img_size must be a positive"]),
        (["stt_resnet10_s", "{tmp}/m.onnx", "--img_size", "-5"], ["img_size must be a positive"]),
        (["stt_resnet10_s", "{tmp}"], ["is a folder"]),
        (["{tmp}/missing", "{tmp}/m.onnx"], ["no such model folder"]),
        (["{segmenter}", "{tmp}/m.onnx"], ["holds a segmenter"]),
    ],
    "visualize": [
        (["--model", "{captioner}"], ["holds a captioner"]),
        (["--model", "{segmenter}"], ["holds a segmenter"]),
        (["--model", "{tmp}/missing"], ["no checkpoint folder at"]),
        (["--model", "stt_resnet10_s", "--size", "0"], ["--size must be a positive"]),
        (["--model", "stt_resnet10_s", "--out", "{tmp}"], ["--out", "is a folder"]),
        (["--model", "stt_resnet10_s", "--out", "{tmp}/picture"], ["--out", "ending in .png"]),
        (["--model", "stt_resnet10_s", "--image", "{text}"], ["cannot identify image file"]),
    ],
    "convert": [
        (["{captioner}", "{tmp}/out"], ["holds a captioner"]),
        (["{segmenter}", "{tmp}/out"], ["holds a segmenter"]),
        (["{tmp}/missing", "{tmp}/out"], ["no checkpoint at"]),
        (["{classifier}", "{classifier}"], ["is the source folder"]),
        (["{classifier}", "{tmp}/out", "--num-classes", "-1"], ["--num-classes"]),
        (["{plugged_weights}", "{tmp}/out", "--model-name", "convnext_atto"],
         ["'convnext_atto' is no registered stt model", "stt_convnext_s"]),
        (["{plugged_weights}", "{tmp}/out", "--model-name", "stt_efficientnet_lite0"],
         ["are not those of stt_efficientnet_lite0", "missing"]),
        (["{plugged_weights}", "{tmp}/out", "--model-name", "stt_convnext_s", "--num-classes", "5"],
         ["not those of stt_convnext_s", "has shape (3,) there, (5,) in the model"]),
        (["{plugged_custom}", "{tmp}/out"], ["trunk 'convnext_atto'", "no variant of a registered plugged"]),
    ],
    "models": [
        (["--filter", "nope*"], ["no registered model matches"]),
    ],
    "write-shards": [
        (["fashion_mnist", "{tmp}/shards", "--num_shards", "0"], ["--num_shards must be a positive"]),
        (["fashion_mnist", "{tmp}/shards", "--format", "zip"], ["--format", "invalid choice"]),
    ],
    "bench-input": [
        (["--img_size", "0"], ["--img_size must be a positive"]),
        (["--batch", "-1"], ["--batch must be a positive"]),
        (["--min_time", "0"], ["--min_time must be a positive"]),
    ],
    "bench": [
        (["--batch_sizes", "0"], ["--batch_sizes must be positive"]),
        (["--out", "{classifier}/config.json"], ["--out", "is a file"]),
        (["--out", "{classifier}/config.json/bench"], ["--out", "is a file"]),
    ],
    "demo": [
        (["--port", "70000"], ["--port must be in 1..65535"]),
        (["--max_pixels", "0"], ["--max_pixels"]),
    ],
    "push": [
        (["{tmp}/missing", "--repo_id", "org/name"], ["no model.safetensors"]),
    ],
    "push-space": [
        (["--repo_id", "org/space", "--model", "{tmp}/missing"], ["no model.safetensors"]),
    ],
}
TABLE = [pytest.param(command, argv, words, id=f"{command}-{i}-{' '.join(argv)[:40]}")
         for command, rows in BAD_VALUES.items() for i, (argv, words) in enumerate(rows)]


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("table")


@pytest.mark.parametrize(("command", "argv", "words"), TABLE)
def test_bad_values_of_every_subcommand(command, argv, words, saved, table_dir, capsys, monkeypatch):
    monkeypatch.chdir(table_dir)  # default output folders would land here
    values = {**{k: str(v) for k, v in saved.items()}, "tmp": str(table_dir)}
    extra = ["--output_dir", str(table_dir / "out")] if command.startswith("train") else []
    before = disk_state(table_dir, saved["classifier"].parent)
    code, text = run_cli(capsys, [command, *[a.format(**values) for a in argv], *extra])
    assert_one_error(code, text, *words)
    assert disk_state(table_dir, saved["classifier"].parent) == before


def test_resume_latest_skips_a_checkpoint_left_half_written(tmp_path):
    """A run killed while saving leaves checkpoint-N without trainer_state.json (the Trainer writes it
    last): `latest` resumes from the newest complete one instead of failing on the half-written one."""
    from types import SimpleNamespace

    from stt_hf.tasks.common import resume_checkpoint

    for step, complete in ((2, True), (10, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    args = SimpleNamespace(resume_from_checkpoint="latest", output_dir=str(tmp_path))
    assert resume_checkpoint(args) == str(tmp_path / "checkpoint-10")  # by step number, not name order
