"""stt-hf visualize: one PNG of every STT block's synthesized maps, from a model name or a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from stt_hf import SttConfig, SttForImageClassification, save_timm_format
from stt_hf.cli import main as cli_main
from stt_hf.reporting.visualize import capture, head_map, load_model, preprocess, stt_blocks, visualize


def assert_png(path, min_width=600, min_height=400):
    assert path.is_file()
    with Image.open(path) as img:
        img.verify()  # a complete, readable PNG
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
        assert min_width <= width <= 4000 and min_height <= height <= 8000, img.size
        # Not a blank canvas: the heatmaps put many colours on it.
        assert len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 50


def test_maps_are_the_blocks_own_and_only_its_modes():
    model = timm.create_model("stt_resnet10_s", stt_modes="hw", zero_init_last=False).eval()
    blocks = stt_blocks(model)
    assert [name for name, _ in blocks] == model.attn_names
    pixels, config = preprocess(model, Image.new("RGB", (50, 40), "orange"))
    assert pixels.shape == (1, 3, 32, 32) and config["input_size"] == (3, 32, 32)
    for cap in capture(model, pixels, blocks):
        assert set(cap["maps"]) == {"h", "w"}
        for attn in cap["maps"].values():  # softmax rows
            torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
        torch.testing.assert_close(cap["z"], cap["x"])  # identity at init
        attn = cap["maps"]["h"]  # (B, heads, H, H)
        np.testing.assert_allclose(head_map(attn, 1), attn[0, 1].numpy())
        np.testing.assert_allclose(head_map(attn, "mean"), attn[0].mean(0).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="head"):
        head_map(attn, 2)  # 2 heads: 0 and 1


def test_saved_checkpoints_any_image_mode_and_one_channel(tmp_path):
    # timm format, 1-channel input: the photo is converted to L and normalized with one mean/std.
    gray = timm.create_model("stt_resnet10_s", in_chans=1, num_classes=3)
    save_timm_format(gray, tmp_path / "timm_ckpt")
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 4), dtype=np.uint8), "RGBA").save(rgba)
    out = visualize(str(tmp_path / "timm_ckpt"), rgba, tmp_path / "gray.png")
    assert out == tmp_path / "gray.png"
    assert_png(out)

    # transformers format, run at another size (STT interpolates its maps), a palette image.
    config = SttConfig.from_timm_name("stt_resnet10_s", num_labels=2, stt_synth="mixture")
    SttForImageClassification(config).save_pretrained(tmp_path / "hf_ckpt")
    model = load_model(str(tmp_path / "hf_ckpt"))
    pixels, _ = preprocess(model, Image.new("RGB", (64, 48), "teal").convert("P"), size=48)
    assert pixels.shape == (1, 3, 48, 48)
    captured = capture(model, pixels, stt_blocks(model))
    assert [c["block"].synth for c in captured] == ["mixture"]  # `_s` models: one block after stage 4
    assert [tuple(c["maps"]["h"].shape[-2:]) for c in captured] == [(6, 6)]  # stride 8


def test_cli_random_init_model_name_prints_the_path(tmp_path, capsys):
    out = tmp_path / "cli.png"
    assert cli_main(["visualize", "--model", "stt_resnet10_s", "--image", "rocket", "--out", str(out),
                     "--size", "40", "--head", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert_png(out)


@pytest.mark.parametrize("build", [
    lambda: timm.create_model("stt_resnet10_s", attn_layer="none"),
    lambda: timm.create_model("stt_resnet10_s", attn_layer="se"),
    lambda: "resnet18",  # a plain timm model, by name
], ids=["attn_none", "se_baseline", "plain_timm"])
def test_model_without_stt_blocks_is_a_clear_error(build, tmp_path):
    with pytest.raises(ValueError, match="no STT blocks"):
        visualize(build(), "chelsea", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_missing_image_and_unknown_model(tmp_path, capsys):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        visualize("stt_resnet10_s", missing, tmp_path / "x.png")
    with pytest.raises(ValueError, match="not_a_model"):
        visualize("not_a_model", "chelsea", tmp_path / "x.png")
    assert cli_main(["visualize", "--model", "stt_resnet10_s", "--image", str(missing)]) == 2
    assert "nope.jpg" in capsys.readouterr().err
