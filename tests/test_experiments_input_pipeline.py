"""`stt-hf bench-input` and the DataLoader defaults of `stt-hf train` that follow from it."""

from __future__ import annotations

import json
import math

import torch

from stt_hf.experiments import input_pipeline
from stt_hf.tasks import streaming, train


def test_workers_cover_the_training_rate_within_the_cores():
    # 1321 images/s to feed at 116.7 images/s per worker: 12 workers, if the cores are there.
    assert streaming.default_num_workers(1321, per_worker_images_per_s=116.7, cpus=16) == 12
    assert streaming.default_num_workers(1321, per_worker_images_per_s=116.7, cpus=16, processes=2) == 7
    assert streaming.default_num_workers(1.0, per_worker_images_per_s=116.7, cpus=2) == 1
    assert streaming.default_num_workers(1.0, per_worker_images_per_s=116.7, cpus=1) == 0


def test_train_sets_the_loader_options_it_was_not_given(monkeypatch, tmp_path):
    def defaults(*flags, cuda=False, per_image=True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        argv = ["--output_dir", str(tmp_path), *flags]
        args = train.parse_args(argv)[2]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)  # the device the defaults are for
        streaming.pipeline_defaults(args, per_image=per_image, explicit=train.given_flags(argv))
        return args.dataloader_num_workers, args.dataloader_pin_memory, args.dataloader_persistent_workers

    one_worker = streaming.default_num_workers(1.0)  # 1, or 0 on a 1-core machine
    assert defaults() == (one_worker, False, one_worker > 0)
    assert defaults(per_image=False) == (0, False, False)  # in-memory batches need no workers
    assert defaults("--dataloader_num_workers", "3") == (3, False, True)
    assert defaults("--dataloader_persistent_workers", "false") == (one_worker, False, False)
    gpu_workers = streaming.default_num_workers(streaming.GPU_IMAGES_PER_S)
    assert defaults(cuda=True) == (gpu_workers, True, gpu_workers > 0)


def test_bench_input_prints_and_writes_the_workers_needed(tmp_path, capsys):
    results = input_pipeline.main(["--model", "stt_resnet10_s", "--reference", "resnet18", "--img_size", "32",
                                   "--batch", "2", "--threads", "1", "--min_time", "0.05", "--rounds", "1",
                                   "--out", str(tmp_path)])
    assert json.loads((tmp_path / "input_pipeline.json").read_text()) == results
    assert results["images"] == 4 and results["worker_images_per_s"] > 0
    assert results["workers_needed_here"] == max(1, math.ceil(results["model_train_images_per_s"]
                                                              / results["worker_images_per_s"]))
    gpu = input_pipeline.PUBLISHED_RESNET50_GPU_IMAGES_PER_S / results["cost_ratio"]
    # (the JSON's rates are rounded: allow the ceiling to land one either side)
    assert abs(results["workers_needed_per_gpu"] - math.ceil(gpu / results["worker_images_per_s"])) <= 1
    assert "workers stt_resnet10_s needs here" in capsys.readouterr().out
