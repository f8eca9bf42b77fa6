"""The ablation driver: corruptions, one real tiny run per kind of variant, resuming, the report."""

from __future__ import annotations

import json

import pytest
import torch

from stt_hf.experiments import ablation
from stt_hf.experiments.ablation import CORRUPTIONS, VARIANTS, AblationConfig


def tiny_config(tmp_path, **overrides) -> AblationConfig:
    values = dict(out_dir=str(tmp_path / "ablation"), datasets={"mnist_5k": dict(train=96, test=48)},
                  seeds=[0], epochs=1, batch_size=32, variants=["plain", "stt_dense"])
    return AblationConfig(**{**values, **overrides})


def test_corruptions_change_images_as_described():
    images = torch.rand(4, 1, 28, 28)
    noisy = ablation.corrupt(images, "noise", 0.1)
    assert noisy.shape == images.shape and 0 <= noisy.min() and noisy.max() <= 1
    assert 0.05 < (noisy - images).std() < 0.12
    assert torch.equal(noisy, ablation.corrupt(images, "noise", 0.1))  # seeded: same noise every call
    center = torch.zeros(1, 1, 28, 28)
    center[..., 10:18, 10:18] = 1
    cropped = ablation.corrupt(center, "crop", 0.5)  # the center square fills twice the area after
    assert cropped.shape == center.shape and cropped.mean() > 1.5 * center.mean()
    bar = torch.zeros(1, 1, 28, 28)
    bar[..., 13:15, :] = 1
    rotated = ablation.corrupt(bar, "rotate", 30.0)
    assert rotated[..., :10, :].sum() > 0 and bar[..., :10, :].sum() == 0  # the bar now tilts
    with pytest.raises(ValueError, match="unknown corruption"):
        ablation.corrupt(images, "blur", 1.0)


@pytest.mark.parametrize("variant", ["se", "self_attn", "flat_random", "stt_fixed_random", "stt_hw",
                                     "stt_stage", "stt_final"])
def test_every_kind_of_variant_builds_and_runs(variant):
    model = ablation.build_model(AblationConfig(), variant, num_classes=10).eval()
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    expected = VARIANTS[variant].get("attn_layer")
    assert (model.attn_layer or "none") == expected
    # Placement comes from the ablation, not from the registered model's defaults (final for `_s`).
    placed = {"stt_stage": ["layer3.1", "layer4.1"], "stt_final": ["layer4.1"]}
    assert model.attn_names == placed.get(variant, ["layer3.0.se", "layer4.0.se"])


def test_run_trains_scores_and_resumes(tmp_path):
    config = tiny_config(tmp_path)
    runs = ablation.run(config)
    assert {(r["variant"], r["seed"]) for r in runs} == {("plain", 0), ("stt_dense", 0)}
    for row in runs:
        assert 0 <= row["acc"] <= 1 and set(CORRUPTIONS) <= set(row)
        assert row["params"] > 0 and row["macs"] > 0
    stt = next(r for r in runs if r["variant"] == "stt_dense")
    plain = next(r for r in runs if r["variant"] == "plain")
    assert stt["params"] > plain["params"]
    # A second call finds every run done and trains nothing; a new seed adds only its own runs.
    lines = (tmp_path / "ablation" / "runs.jsonl").read_text().splitlines()
    assert len(ablation.run(config)) == 2
    assert (tmp_path / "ablation" / "runs.jsonl").read_text().splitlines() == lines
    assert len(ablation.run(tiny_config(tmp_path, seeds=[0, 1], variants=["plain"]))) == 3


def test_report_tables_and_plots(tmp_path):
    out = tmp_path / "ablation"
    out.mkdir()
    rows = []
    for variant, base in (("plain", 0.80), ("stt_dense", 0.85)):
        for seed, delta in ((0, -0.01), (1, 0.01)):
            row = dict(variant=variant, dataset="mnist_5k", seed=seed, params=1000, macs=2_000_000,
                       train_s=1.0, final_loss=0.1, acc=base + delta)
            row.update({name: base / 2 for name in CORRUPTIONS})
            rows.append(row)
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = ablation.report(out)
    by_variant = {r["variant"]: r for r in result["summary"]}
    assert by_variant["stt_dense"]["acc"] == pytest.approx(0.85)
    assert by_variant["stt_dense"]["acc_std"] == pytest.approx(0.01414, abs=1e-4)
    table = (out / "results.md").read_text()
    assert "| stt_dense | 0.001 | 2.0 | 85.00 ± 1.41 |" in table
    assert "Robustness on mnist_5k" in table
    for name in ("runs.csv", "summary.csv", "accuracy.png", "robustness.png"):
        assert (out / name).stat().st_size > 0


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown keys \\['learning_rate'\\]"):
        ablation.load_config(str(bad), {})
    with pytest.raises(ValueError, match="unknown variants"):
        ablation.run(tiny_config(tmp_path, variants=["stt_dense", "transformer"]))
    with pytest.raises(FileNotFoundError, match="no runs"):
        ablation.report(tmp_path)
