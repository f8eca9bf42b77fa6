"""Export for serving: ONNX checked against onnxruntime, torch.export, and the command line."""

from __future__ import annotations

from functools import partial

import hub_fixtures
import onnx
import pytest
import timm
import torch
from model_helpers import switched_on

import stt_hf  # noqa: F401  (registers the stt_* models with timm)
from stt_hf.cli import main as cli_main
from stt_hf.hf.configuration_stt import SttConfig
from stt_hf.hf.modeling_stt import SttForImageClassification
from stt_hf.tasks.export import export_onnx, load_for_export, max_abs_diff

local_hub = hub_fixtures.local_hub
switched_on_with_stats = partial(switched_on, running_stats=True)


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    """A transformers-format checkpoint (save_pretrained) of a small STT ResNet, attention switched on,
    with the STT block in two stages so two reference sizes are exported."""
    torch.manual_seed(0)
    config = SttConfig.from_timm_name("stt_resnet10_s", num_labels=10, attn_placement="stage",
                                      attn_stages=[3, 4])
    model = switched_on_with_stats(SttForImageClassification(config)).eval()
    folder = tmp_path_factory.mktemp("saved") / "stt"
    model.save_pretrained(folder)
    return folder


def graph_input_dims(path) -> list[int | str]:
    (inp,) = onnx.load(str(path)).graph.input
    return [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]


@pytest.mark.parametrize("img_size", [32, 40], ids=["cfg_size", "other_size"])
def test_onnx_of_saved_folder_matches_torch(img_size, saved_folder, tmp_path):
    """Two input sizes (one graph each) and two batch sizes per graph: onnxruntime within 1e-4."""
    path = export_onnx(str(saved_folder), tmp_path / "model.onnx", img_size=img_size)
    dims = graph_input_dims(path)
    assert isinstance(dims[0], str) and dims[1:] == [3, img_size, img_size]  # batch is symbolic
    model, input_size = load_for_export(str(saved_folder))  # as loaded: BatchNorms not folded
    assert input_size == (3, 32, 32)
    blocks = [m for _, m in model.model.resnet.attention_modules()]
    assert len(blocks) == 2 and all(m.norm.weight.abs().min() > 0.4 for m in blocks)  # not the identity
    for batch in (1, 3):
        assert max_abs_diff(model, path, torch.randn(batch, 3, img_size, img_size)) <= 1e-4


def test_onnx_of_module_leaves_it_unfused(tmp_path):
    model = switched_on_with_stats(timm.create_model("stt_resnet10_s")).eval()
    path = export_onnx(model, tmp_path / "m.onnx", img_size=32)
    assert [type(m.norm) for _, m in model.attention_modules()] == [torch.nn.BatchNorm2d]
    assert max_abs_diff(model, path, torch.randn(2, 3, 32, 32)) <= 1e-4


@pytest.mark.parametrize("attn_layer", ["self_attn", "axial", "criss_cross"])
def test_onnx_of_attention_baselines_matches_torch(attn_layer, tmp_path):
    """The dot-product baselines export too (einsum, the criss-cross self mask), fused and not."""
    model = switched_on_with_stats(timm.create_model("stt_resnet10_s", attn_layer=attn_layer)).eval()
    for fuse in (False, True):
        path = export_onnx(model, tmp_path / f"{fuse}.onnx", img_size=40, fuse=fuse)
        assert max_abs_diff(model, path, torch.randn(2, 3, 40, 40)) <= 1e-4


def test_export_onnx_command_timm_name(tmp_path, capsys):
    out = tmp_path / "sub" / "stt.onnx"
    assert cli_main(["export-onnx", "stt_resnet10_s", str(out), "--img_size", "24"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "batch x 3 x 24 x 24" in printed
    last = printed.strip().splitlines()[-1]  # max |onnxruntime - torch|: batch 1: 1.2e-07, batch 3: ...
    diffs = [float(part.rsplit(" ", 1)[-1]) for part in last.split(":", 1)[1].split(",")]
    assert len(diffs) == 2 and max(diffs) <= 1e-4
    assert graph_input_dims(out)[1:] == [3, 24, 24]


def test_export_onnx_command_hub_id(saved_folder, tmp_path, local_hub):
    """A Hub id: the saved folder uploaded to the test Hub, exported by the command in a client process."""
    local_hub.run_python("import sys; from huggingface_hub import create_repo, upload_folder; "
                         "create_repo('user/stt-small'); "
                         "upload_folder(folder_path=sys.argv[1], repo_id='user/stt-small')",
                         str(saved_folder))
    out = tmp_path / "hub.onnx"
    proc = local_hub.run_python("import sys; from stt_hf.cli import main; sys.exit(main(sys.argv[1:]))",
                                "export-onnx", "user/stt-small", str(out), timeout=300)
    assert "max |onnxruntime - torch|" in proc.stdout
    model, _ = load_for_export(str(saved_folder))
    assert max_abs_diff(model, out, torch.randn(2, 3, 32, 32)) <= 1e-4


@pytest.mark.parametrize("fuse", [False, True], ids=["plain", "fused"])
def test_torch_export_dynamic_batch(fuse):
    model = switched_on_with_stats(timm.create_model("stt_resnet10_s", stt_synth="mixture")).eval()
    if fuse:
        model.fuse_for_inference()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    for b in (1, 5):
        x = torch.randn(b, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)
