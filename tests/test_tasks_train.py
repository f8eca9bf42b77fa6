"""`stt-hf train` / `eval` / `push` end to end, on real (small) data, a real Trainer and a local Hub."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import hub_fixtures
import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file

from stt_hf.tasks import train

local_hub = hub_fixtures.local_hub

REPO_ROOT = Path(__file__).resolve().parents[1]
# A tiny but real run: mnist_5k digits, stt_resnet10_s, a few optimizer steps.
TINY = ["--dataset", "mnist_5k", "--max_train_samples", "64", "--max_eval_samples", "32",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32",
        "--logging_steps", "1", "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps",
        "--save_steps", "2", "--warmup_steps", "0",
        "--disable_tqdm", "true"]


def tiny_args(output_dir, *extra) -> list[str]:
    return [*TINY, "--output_dir", str(output_dir), "--max_steps", "4", *extra]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(args, env=None, timeout=300, check=True) -> subprocess.CompletedProcess:
    import torch

    # The same thread count as this process: results compared across the two then match bit for bit.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(torch.get_num_threads()), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "stt_hf.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"stt-hf {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    results = train.main(tiny_args(out))
    return out, results


def test_train_writes_every_output(trained_run):
    out, results = trained_run
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md",
                 "metrics.json", "training_curves.png", "modeling_stt.py", "configuration_stt.py"):
        assert (out / name).is_file(), name
    assert not (out / ".saving").exists()
    # Metrics JSON and the card's model-index hold the same measured numbers.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_split"] == "test" and metrics["global_step"] == 4
    acc = metrics["metrics"]["accuracy"]
    assert 0.0 <= acc <= 1.0 and acc == pytest.approx(results["eval"]["test_accuracy"])
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    values = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values["accuracy"] == pytest.approx(round(acc, 4))
    assert "stt_resnet10_s" in card and "timm_from_pretrained" in card and "max_steps 4" in card
    assert "| STT placement | `final`, stage(s) 4 |" in card  # the `_s` default, as built
    assert Image.open(out / "training_curves.png").size[0] > 100


def test_outputs_have_the_usual_file_mode_and_say_where_the_weights_came_from(trained_run, capsys):
    out, results = trained_run
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    umask = os.umask(0)
    os.umask(umask)
    assert modes["model.safetensors"] == 0o666 & ~umask, modes  # not the 0600 of a temporary file
    assert len(set(modes.values())) == 1, modes
    best = json.loads((out / "metrics.json").read_text())["best"]
    assert best["checkpoint"] == f"checkpoint-{best['step']}" and best["step"] in (2, 4)
    assert best["metric"] == "validation accuracy" and 0.0 <= best["value"] <= 1.0
    assert results["best"] == best
    train.print_summary(results)
    assert f"weights from step {best['step']} of 4 (checkpoint-{best['step']})" in capsys.readouterr().out


def test_saved_model_loads_with_transformers_and_timm(trained_run):
    import torch
    from transformers import AutoModelForImageClassification

    import stt_hf

    out, _ = trained_run
    x = torch.randn(2, 3, 32, 32)
    hf = AutoModelForImageClassification.from_pretrained(out).eval()
    tm = stt_hf.timm_from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, tm(x), rtol=0, atol=1e-6)
    state = load_file(out / "model.safetensors")
    assert any(k.endswith("layer4.1.synths.c.dense.w1") for k in state)  # the STT weights are saved


def test_eval_scores_a_checkpoint(trained_run, tmp_path):
    out, results = trained_run
    report = tmp_path / "eval.json"
    run_cli(["eval", "--model", str(out), "--dataset", "mnist_5k", "--max_eval_samples", "32",
             "--output", str(report)])
    scored = json.loads(report.read_text())
    assert scored["split"] == "test" and scored["samples"] == 32
    assert scored["metrics"]["accuracy"] == pytest.approx(results["eval"]["test_accuracy"])


def test_config_file_is_overridden_by_flags(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"learning_rate": 0.123, "max_steps": 7, "model": "stt_resnet18_s"}))
    model_args, _, training_args = train.parse_args(["--config", str(cfg), "--max_steps", "3"])
    assert training_args.learning_rate == 0.123 and training_args.max_steps == 3
    assert model_args.model == "stt_resnet18_s"


def write_bad_imagefolder(root: Path) -> Path:
    for label in ("a", "b"):
        (root / "train" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / "train" / label / f"{i}.png")
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("problem", ["non_image", "missing_label_column"])
def test_bad_dataset_fails_before_training(tmp_path, problem):
    out = tmp_path / "out"
    if problem == "non_image":
        dataset, extra, match = str(write_bad_imagefolder(tmp_path / "imgs")), [], "notes.txt"
    else:  # a saved dataset whose labels sit in a column the flags do not name
        import datasets

        images = [Image.fromarray(np.full((8, 8), 30 * i, np.uint8)) for i in range(4)]
        ds = datasets.Dataset.from_dict({"image": images, "digit": [0, 1, 0, 1]},
                                        features=datasets.Features({"image": datasets.Image(),
                                                                    "digit": datasets.Value("int64")}))
        ds.save_to_disk(tmp_path / "saved")
        dataset, extra, match = str(tmp_path / "saved"), ["--label_column", "label"], "label"
    with pytest.raises(ValueError, match=match):
        train.main([*tiny_args(out), "--dataset", dataset, *extra])
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()


def test_interrupted_save_keeps_the_previous_model(trained_run, tmp_path, monkeypatch):
    from stt_hf.reporting.publish import atomic_save

    out, _ = trained_run
    before = sha256(out / "model.safetensors")

    def dying_save(folder):
        (Path(folder) / "model.safetensors").write_bytes(b"\x00" * 10)  # half-written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save(out, dying_save)
    assert sha256(out / "model.safetensors") == before


def test_resume_after_sigkill_finishes_at_the_same_step(tmp_path):
    out = tmp_path / "killed"
    args = ["train", *TINY, "--output_dir", str(out), "--max_steps", "8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    log = tmp_path / "killed.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "stt_hf.cli", *args], env=env, cwd=REPO_ROOT,
                                stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while (time.time() < deadline and proc.poll() is None
               and not (out / "checkpoint-4" / "trainer_state.json").exists()):
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / "checkpoint-4" / "trainer_state.json").exists(), log.read_text()[-3000:]
    assert not (out / "model.safetensors").exists(), "the run finished before it was killed"

    run_cli([*args, "--resume_from_checkpoint", "latest"])
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["train_runtime"] > 0
    assert load_file(out / "model.safetensors")  # a complete, loadable model


DDP_SCRIPT = textwrap.dedent("""
    import hashlib, os, sys, torch
    from stt_hf.tasks import train
    trainer, results = train.run(sys.argv[1:])
    # Each rank records a digest of its final parameters for the test to compare. (BatchNorm running
    # statistics are per-rank buffers in DDP: each rank's last forward updates them from its own batch.)
    params = trainer.model.parameters()
    digest = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in params))
    rank = int(os.environ["RANK"])
    out = sys.argv[sys.argv.index("--output_dir") + 1]
    open(os.path.join(out, f"rank{rank}.sha"), "w").write(digest.hexdigest())
""")


def test_ddp_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), *tiny_args(out), "--ddp_backend", "gloo", "--save_steps", "4",
           "--eval_steps", "4", "--load_best_model_at_end", "false"]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "rank0.sha").read_text() == (out / "rank1.sha").read_text()
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-4"]
    assert len(list(out.rglob("README.md"))) == 1 and (out / "model.safetensors").is_file()
    assert proc.stdout.count("== done in") == 1  # one summary, from the main process


def test_push_then_load_from_the_hub_in_a_fresh_process(trained_run, local_hub):
    out, _ = trained_run
    run_cli(["push", str(out), "--repo_id", "stt/digits"], env=local_hub.env)
    files = local_hub.files("stt/digits")
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md",
                 "modeling_stt.py"):
        assert name in files, name
    assert not any(name.startswith("checkpoint-") for name in files)
    local_hub.run_python(textwrap.dedent("""
        import torch, timm
        import stt_hf
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        x = torch.randn(1, 3, 32, 32)
        hf = AutoModelForImageClassification.from_pretrained("stt/digits").eval()
        AutoImageProcessor.from_pretrained("stt/digits")
        tm = stt_hf.timm_from_pretrained("stt/digits").eval()
        hub = timm.create_model("hf-hub:stt/digits", pretrained=True).eval()  # plain timm loader
        with torch.no_grad():
            torch.testing.assert_close(hf(x).logits, tm(x), rtol=0, atol=1e-6)
            torch.testing.assert_close(hf(x).logits, hub(x), rtol=0, atol=1e-6)
    """))


def test_failed_push_is_reported_and_retry_succeeds(trained_run, local_hub):
    out, _ = trained_run
    before = {p.name: sha256(p) for p in out.iterdir() if p.is_file()}
    local_hub.fail_next(1, status=500, route="commit")
    proc = run_cli(["push", str(out), "--repo_id", "stt/retry"], env=local_hub.env, check=False)
    assert proc.returncode != 0
    assert "push of" in proc.stderr and "retry" in proc.stderr
    assert {p.name: sha256(p) for p in out.iterdir() if p.is_file()} == before
    local_hub.drop_next(1, route="commit")
    assert run_cli(["push", str(out), "--repo_id", "stt/retry"], env=local_hub.env, check=False).returncode
    run_cli(["push", str(out), "--repo_id", "stt/retry"], env=local_hub.env)
    assert local_hub.files("stt/retry")["model.safetensors"] == (out / "model.safetensors").read_bytes()


def test_fine_tune_a_checkpoint_on_new_labels(trained_run, tmp_path):
    from transformers import AutoConfig

    out, _ = trained_run
    root = tmp_path / "shapes"
    for label in ("circle", "square", "triangle"):
        (root / "train" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((28, 28), 20 * i + 5, np.uint8)).save(root / "train" / label / f"{i}.png")
    tuned = tmp_path / "tuned"
    train.main([*tiny_args(tuned), "--model", str(out), "--dataset", str(root), "--max_steps", "2",
                "--val_fraction", "0.25"])
    config = AutoConfig.from_pretrained(tuned)
    assert config.num_labels == 3 and set(config.id2label.values()) == {"circle", "square", "triangle"}
    trunk_before = load_file(out / "model.safetensors")["resnet.conv1.weight"]
    trunk_after = load_file(tuned / "model.safetensors")["resnet.conv1.weight"]
    # The trunk came from the checkpoint: two AdamW steps (lr 3e-3) move each weight by < 0.01, while
    # a fresh initialization would differ by the weights' own scale.
    assert (trunk_after - trunk_before).abs().max() < 0.02 < trunk_before.abs().max()


def test_bf16_is_the_default_only_where_the_machine_has_it_natively(monkeypatch, tmp_path):
    import torch

    from stt_hf.tasks import common, train_caption

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert common.native_bf16() is True
    assert train.parse_args(["--output_dir", str(tmp_path)])[2].bf16 is True
    assert train.parse_args(["--output_dir", str(tmp_path), "--bf16", "false"])[2].bf16 is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f\n")
    real_path = common.Path
    monkeypatch.setattr(common, "Path",
                        lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    assert common.native_bf16() is False
    assert train.parse_args(["--output_dir", str(tmp_path)])[2].bf16 is False
    assert train_caption.parse_args(["--output_dir", str(tmp_path)])[2].bf16 is False
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert common.native_bf16() is True
    assert train.parse_args(["--output_dir", str(tmp_path)])[2].bf16 is True
    assert train_caption.parse_args(["--output_dir", str(tmp_path)])[2].bf16 is True  # the captioner too
