"""scripts/gpu_check.sh: the GPU check's own code, run on the CPU at toy sizes (--dry_run)."""

from __future__ import annotations

import json

import pytest
import torch

from stt_hf.experiments import gpu_check


def test_dry_run_measures_every_row_and_writes_results(tmp_path):
    result = gpu_check.main(["--dry_run", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(result))
    cfg = gpu_check.PRESETS["dry_run"]
    # Every model in every mode and batch size: eager and compiled measured, CUDA graphs need CUDA.
    rows = {(r["model"], r["mode"], r["batch"]): r for r in saved["models"]}
    assert set(rows) == {(m, mode, b) for m in gpu_check.MODELS for mode in gpu_check.MODES
                         for b in cfg["batches"]}
    for (_, mode, _), row in rows.items():
        if mode == "cudagraphs":
            assert row["status"] == "skipped (needs CUDA)"
        else:
            assert row["status"] == "ok" and row["infer_img_s"] > 0 and row["train_img_s"] > 0, row
    # STT beside self-attention (and axial attention where the registry has it) at each size.
    assert "stt" in gpu_check.BLOCK_MODULES and "self_attn" in gpu_check.BLOCK_MODULES
    blocks = {(r["module"], r["size"]): r for r in saved["blocks"]}
    assert set(blocks) == {(m, s) for m in gpu_check.BLOCK_MODULES for s in cfg["block_sizes"]}
    assert all(r["status"] == "ok" and r["fwd_ms"] > 0 and r["peak_mb"] >= 0 for r in blocks.values())
    # The main job's recipe ran its steps and saved a model.
    assert saved["training"]["steps"] == cfg["train_steps"] and saved["training"]["seconds"] > 0
    assert (tmp_path / "main_job" / "model.safetensors").is_file()
    md = (tmp_path / "results.md").read_text()
    assert "| stt_resnet50 | compiled | 2 |" in md and "| self_attn | 16:16x16 | 2 |" in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_without_a_gpu_it_says_so():
    with pytest.raises(RuntimeError, match="needs a CUDA device .* --dry_run runs it on the CPU"):
        gpu_check.main(["--out", "unused"])
