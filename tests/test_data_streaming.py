"""`stt-hf write-shards` and `stt-hf train --streaming`: real shards written from MNIST digits, read back
as `datasets` streams; the resume position, the split across processes, and whole runs."""

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

import datasets
import pytest

from stt_hf.data import streaming
from stt_hf.data.shards import load_source, write_shards
from stt_hf.tasks import train

REPO_ROOT = Path(__file__).resolve().parents[1]
# A tiny streaming run: 2 images/step, checkpoints every 2 steps, 28 px digits.
RUN = ["--streaming", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "16",
       "--shuffle_buffer", "8", "--logging_steps", "1", "--eval_strategy", "steps", "--eval_steps", "2",
       "--save_strategy", "steps", "--save_steps", "2", "--warmup_steps", "0", "--disable_tqdm", "true",
       "--report_to", "none"]


@pytest.fixture(autouse=True)
def _no_shutdown_sleep(monkeypatch):
    # datasets waits 5 s after each pass over several Parquet files (an Arrow thread-shutdown
    # workaround); the tests run many short passes.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def digest(example) -> str:
    return hashlib.sha1(example["image"]["bytes"]).hexdigest()[:12]


@pytest.fixture(scope="module")
def digits():
    dsd = load_source("mnist_5k", "classification", max_train_samples=48, max_eval_samples=16)
    raw = dsd["train"].cast_column("image", datasets.Image(decode=False))
    keys = [digest(e) for e in raw]
    assert len(set(keys)) == len(keys)  # every example recognisable by its bytes
    return dsd, keys


@pytest.fixture(scope="module", params=["parquet", "webdataset"])
def shards(request, digits, tmp_path_factory):
    dsd, _ = digits
    folder = tmp_path_factory.mktemp(request.param) / "digits"
    return write_shards(dsd, folder, format=request.param, num_shards={"train": 4})


def raw_stream(folder):
    return streaming.select_columns(streaming.open_stream(str(folder)), "image", "label", "label")


def test_shards_stream_back_every_example_with_its_class_names(shards, digits):
    dsd, keys = digits
    stream = raw_stream(shards)
    assert stream.num_shards == 4
    assert stream.features["label"].names == dsd["train"].features["label"].names
    rows = list(stream)
    assert sorted(digest(r) for r in rows) == sorted(keys)
    labels = dict(zip(keys, dsd["train"]["label"], strict=True))
    assert all(labels[digest(r)] == r["label"] for r in rows)
    with pytest.raises(FileExistsError, match="not empty"):
        write_shards(dsd, shards)


def batches(folder, skip: int, workers: int, count: int) -> list[list[str]]:
    stream = streaming.TrainingStream(raw_stream(folder), digest, batch_size=5, seed=3, shuffle_buffer=8,
                                      skip_batches=skip)
    loader = streaming.StreamLoader(stream, batch_size=5, num_workers=workers, collate_fn=list)
    it = iter(loader)
    return [next(it) for _ in range(count)]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_continues_with_exactly_the_next_batches(shards, workers):
    # 24 batches of 5 are 2.5 passes over 48 examples: the resume points fall in the first and
    # second pass, on and off a round of the workers.
    full = batches(shards, 0, workers, 24)
    assert len({k for b in full[:8] for k in b}) == 40  # no example twice within a pass
    for skip in (1, 7, 10, 13):
        assert batches(shards, skip, workers, 24 - skip) == full[skip:], skip


def test_processes_read_disjoint_parts(digits, tmp_path):
    dsd, keys = digits
    # 4 shards: whole shards per rank; 3 shards: every rank reads all and keeps every other example.
    for num_shards in (4, 3):
        folder = write_shards(dsd, tmp_path / str(num_shards), num_shards={"train": num_shards})
        parts = [[digest(e) for e in streaming.node_shard(raw_stream(folder), rank, 2)] for rank in (0, 1)]
        assert not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == sorted(keys)


def test_workers_divide_the_shards(shards):
    stream = raw_stream(shards)  # 4 shards
    assert [streaming.workers_for(stream, n) for n in (0, 1, 2, 3, 4, 8)] == [0, 1, 2, 2, 4, 4]


def test_streaming_needs_max_steps_and_a_stream(tmp_path, shards):
    with pytest.raises(ValueError, match="--streaming needs --max_steps"):
        train.main([*RUN, "--dataset", str(shards), "--output_dir", str(tmp_path / "a")])
    with pytest.raises(ValueError, match="--shuffle_buffer must be a positive"):
        train.main([*RUN, "--dataset", str(shards), "--max_steps", "2", "--shuffle_buffer", "0",
                    "--output_dir", str(tmp_path / "c")])
    with pytest.raises(ValueError, match="write-shards mnist_5k"):
        train.main([*RUN, "--dataset", "mnist_5k", "--max_steps", "2", "--output_dir", str(tmp_path / "b")])


def test_streaming_run_resumes_and_refuses_changed_settings(tmp_path, digits):
    dsd, _ = digits
    folder = write_shards(dsd, tmp_path / "digits", format="webdataset", num_shards={"train": 2})
    out = tmp_path / "run"
    args = [*RUN, "--dataset", str(folder), "--output_dir", str(out), "--dataloader_num_workers", "0"]
    results = train.main([*args, "--max_steps", "2"])
    assert results["global_step"] == 2 and results["eval_split"] == "test"
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["StreamSettings"]["args"]["dataloader_num_workers"] == 0
    with pytest.raises(ValueError, match="per_device_train_batch_size 4 -> 8"):
        train.main([*args, "--max_steps", "4", "--resume_from_checkpoint", "latest",
                    "--per_device_train_batch_size", "8"])
    results = train.main([*args, "--max_steps", "4", "--resume_from_checkpoint", "latest"])
    assert results["global_step"] == 4 and (out / "checkpoint-4").is_dir()
    assert "16 streamed training images" in (out / "README.md").read_text()


# Each DataLoader worker of each rank writes the examples it decodes to its own file.
RECORDING_SCRIPT = textwrap.dedent("""
    import hashlib, os, sys
    import datasets
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0
    from stt_hf.tasks import streaming, train
    out = sys.argv[sys.argv.index("--output_dir") + 1]
    wrapped = streaming.example_transform

    def recording(train_tf):
        apply = wrapped(train_tf)
        def record(example):
            key = hashlib.sha1(example["image"]["bytes"]).hexdigest()[:12]
            name = f"seen-rank{os.environ.get('RANK', '0')}-pid{os.getpid()}.txt"
            with open(os.path.join(out, name), "a") as f:
                f.write(key + "\\n")
            return apply(example)
        return record

    streaming.example_transform = recording
    trainer, results = train.run(sys.argv[1:])
""")


def seen(out: Path, rank: int) -> list[str]:
    return [k for p in sorted(out.glob(f"seen-rank{rank}-*.txt")) for k in p.read_text().split()]


@pytest.mark.slow
def test_two_processes_train_on_disjoint_examples(tmp_path, digits):
    dsd, keys = digits
    folder = write_shards(dsd, tmp_path / "digits", num_shards={"train": 4})
    out = tmp_path / "ddp"
    out.mkdir()
    script = tmp_path / "record.py"
    script.write_text(RECORDING_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO_ROOT)}
    # 3 steps of 4 examples per rank, from 2 shards of 12 examples per rank.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), *RUN, "--dataset", str(folder), "--output_dir", str(out), "--max_steps", "3",
           "--shuffle_buffer", "1", "--dataloader_num_workers", "2", "--ddp_backend", "gloo",
           "--save_steps", "3", "--eval_steps", "3", "--load_best_model_at_end", "false"]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [seen(out, 0), seen(out, 1)]
    assert all(len(r) >= 12 for r in ranks), [len(r) for r in ranks]
    assert not set(ranks[0]) & set(ranks[1])  # the two processes never decoded the same example
    assert set(ranks[0]) | set(ranks[1]) <= set(keys)
    assert proc.stdout.count("== done in") == 1 and (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_killed_streaming_run_resumes_where_it_stopped(tmp_path, digits):
    dsd, keys = digits
    folder = write_shards(dsd, tmp_path / "digits", num_shards={"train": 2})
    out = tmp_path / "killed"
    out.mkdir()
    script = tmp_path / "record.py"
    script.write_text(RECORDING_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO_ROOT)}
    # No shuffling and no workers: the examples come in shard order, so the test knows which ones
    # steps 1-2 trained on (the first 8) and which ones the rest of the run must see.
    args = [*RUN, "--dataset", str(folder), "--output_dir", str(out), "--max_steps", "6",
            "--shuffle_buffer", "1", "--dataloader_num_workers", "0", "--eval_steps", "6",
            "--load_best_model_at_end", "false"]
    order = [digest(e) for e in raw_stream(folder)]
    with open(tmp_path / "killed.log", "w") as sink:
        proc = subprocess.Popen([sys.executable, str(script), *args], env=env, cwd=REPO_ROOT, stdout=sink,
                                stderr=subprocess.STDOUT)
        deadline = time.time() + 400
        while (time.time() < deadline and proc.poll() is None
               and not (out / "checkpoint-2" / "trainer_state.json").exists()):
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    log = (tmp_path / "killed.log").read_text()
    assert (out / "checkpoint-2" / "trainer_state.json").exists(), log[-3000:]
    assert not (out / "checkpoint-6").exists(), "the run finished before it was killed"
    done = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")
               if (p / "trainer_state.json").exists())  # 2, or 4 when the kill came late
    for p in out.glob("seen-*.txt"):
        p.unlink()
    resumed = subprocess.run([sys.executable, str(script), *args, "--resume_from_checkpoint", "latest"],
                             env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # The remaining steps decode the examples after the first `4 * done` of the stream, in order,
    # and never one of those.
    decoded = seen(out, 0)
    assert decoded[:4 * (6 - done)] == order[4 * done:24]
    assert not set(decoded) & set(order[:4 * done])
    assert json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6


def test_webdataset_shards_keep_masks_and_captions(tmp_path):
    import numpy as np
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(),
                                  "caption": datasets.Value("string")})
    images = [Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)) for i in range(6)]
    masks = [Image.fromarray(np.full((8, 8), i % 3, np.uint8)) for i in range(6)]
    ds = datasets.Dataset.from_dict({"image": images, "mask": masks, "caption": [f"c{i}" for i in range(6)]},
                                    features=features)
    folder = write_shards(datasets.DatasetDict({"train": ds}), tmp_path / "scenes", format="webdataset",
                          num_shards=2)
    rows = sorted(streaming.open_stream(str(folder)), key=lambda r: r["caption"])
    assert [r["caption"] for r in rows] == [f"c{i}" for i in range(6)]
    for row, mask in zip(rows, masks, strict=True):
        decoded = streaming.decode_image(row["mask"])
        assert decoded.mode == "L" and np.array_equal(np.asarray(decoded), np.asarray(mask))
