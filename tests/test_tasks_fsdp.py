"""FSDP on CPU processes, as far as the installed stack allows.

accelerate (1.15) enables FSDP only for GPU-like devices: CPU processes are MULTI_CPU, where the
Trainer's `--fsdp` would be ignored and the run would silently be DDP, so `stt-hf train` refuses it
(first test). What runs here is PyTorch's own FSDP2 (`fully_shard`, the engine the Trainer uses with
`fsdp_version: 2` on GPUs) on the STT classifier in 2 gloo processes: training, a full-state
safetensors save that a single-process model loads with identical outputs, and a resume from a sharded
(`torch.distributed.checkpoint`) checkpoint that continues exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stt_hf.tasks import train

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_fsdp_without_a_gpu_is_refused_not_silently_ddp(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="FSDP needs GPUs"):
        train.main(["--dataset", "mnist_5k", "--max_train_samples", "32", "--max_eval_samples", "16",
                    "--max_steps", "1", "--output_dir", str(tmp_path), "--fsdp", "full_shard"])
    assert not any(tmp_path.iterdir())


FSDP_SCRIPT = textwrap.dedent("""
    import sys
    import torch, torch.distributed as dist, torch.nn.functional as F
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict, set_state_dict)
    from torch.distributed.fsdp import fully_shard
    from stt_hf.hf.configuration_stt import SttConfig
    from stt_hf.hf.modeling_stt import SttForImageClassification

    out, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = SttForImageClassification(SttConfig.from_timm_name("stt_resnet10_s", num_labels=10, img_size=32))
    for module in model.modules():  # each residual block its own FSDP unit, then the rest
        if type(module).__name__ == "BasicBlock":
            fully_shard(module)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if start:  # resume from the sharded checkpoint of step `start`
        state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
        dcp.load(state, checkpoint_id=f"{out}/sharded-{start}")
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g))
               for _ in range(stop)]
    model.train()
    for step in range(start, stop):
        x, y = (t[rank * 4:(rank + 1) * 4] for t in batches[step])  # each rank its half of the batch
        F.cross_entropy(model(pixel_values=x).logits, y).backward()
        optimizer.step()
        optimizer.zero_grad()
    dcp.save({"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)},
             checkpoint_id=f"{out}/sharded-{stop}")
    model.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(pixel_values=x).logits
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        from safetensors.torch import save_file
        model.save_pretrained(f"{out}/full-{start}-{stop}", state_dict=full)
        save_file({"logits": logits}, f"{out}/logits-{start}-{stop}.safetensors")
    dist.barrier()
    dist.destroy_process_group()
""")


def run_fsdp(script: Path, out: Path, start: int, stop: int) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(out), str(start), str(stop)]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes_saves_full_state_and_resumes_from_shards(tmp_path):
    from transformers import AutoModelForImageClassification

    script = tmp_path / "fsdp.py"
    script.write_text(FSDP_SCRIPT)
    run_fsdp(script, tmp_path, 0, 4)  # uninterrupted
    run_fsdp(script, tmp_path, 0, 2)  # stopped at step 2 ...
    run_fsdp(script, tmp_path, 2, 4)  # ... and resumed from its sharded checkpoint

    # The gathered full state loads into a single-process model, which computes the same logits.
    single = AutoModelForImageClassification.from_pretrained(tmp_path / "full-0-4").eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(single(pixel_values=x).logits,
                                   load_file(tmp_path / "logits-0-4.safetensors")["logits"], rtol=0, atol=0)

    # Resumed from shards, the weights end exactly where the uninterrupted run's do. (BatchNorm's
    # running statistics are per-process buffers under FSDP, as under DDP: not compared.)
    uninterrupted = load_file(tmp_path / "full-0-4" / "model.safetensors")
    resumed = load_file(tmp_path / "full-2-4" / "model.safetensors")
    stopped = load_file(tmp_path / "full-0-2" / "model.safetensors")
    weights = [k for k in uninterrupted if "running_" not in k and "num_batches" not in k]
    assert len(weights) > 40
    for key in weights:
        assert torch.equal(resumed[key], uninterrupted[key]), key
    assert any(not torch.equal(stopped[k], uninterrupted[k]) for k in weights)  # steps 3-4 did train
