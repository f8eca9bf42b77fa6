"""The segmentation placement comparison: real `stt-hf train-seg` runs (tiny), resuming, the report."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from stt_hf.experiments import seg_comparison
from stt_hf.experiments.seg_comparison import VARIANTS, SegComparisonConfig
from stt_hf.reporting.profiling import count_macs, count_params

# A narrow stt_resnet18 (through train-seg's --model_kwargs, merged under each variant's options), a
# handful of scenes and two steps: the comparison's machinery, not its numbers.
TINY_TRAIN = ["--model_kwargs", '{"channels": [8, 16, 32, 64]}', "--scenes_train", "16",
              "--scenes_validation", "8", "--scenes_test", "8", "--per_device_train_batch_size", "8",
              "--per_device_eval_batch_size", "8", "--max_steps", "2", "--hidden_size", "16",
              "--warmup_steps", "0"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """fashion_scenes generated into this module's own cache; one thread for the tiny training runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STT_HF_SCENES_CACHE", str(tmp_path_factory.mktemp("scenes")))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def seeded(env, tmp_path_factory):
    """Two variants at one seed, no cost runs."""
    config = SegComparisonConfig(out_dir=str(tmp_path_factory.mktemp("cmp") / "seg"),
                                 variants=["plain", "stt_blocks34"], seeds=[0], canvas=32, large_canvas=0,
                                 train_args=TINY_TRAIN)
    return config, seg_comparison.run(config)


@pytest.fixture(scope="module")
def compared(seeded):
    """The same folder continued with a cost run at 64 px: only that run is new."""
    config = replace(seeded[0], variants=["stt_blocks34"], large_canvas=64)
    return config, seg_comparison.run(config)


def test_every_variant_is_a_valid_backbone_with_its_modules_where_named():
    import timm

    import stt_hf  # noqa: F401  (registers the models)

    models = {name: timm.create_model("stt_resnet18", small_input=False, img_size=64, **options)
              for name, options in VARIANTS.items()}
    for name, model in models.items():
        stages = {n.split(".")[0] for n in model.attn_names}
        expected = ({"layer1", "layer2", "layer3", "layer4"} if name.endswith("_stages") else
                    {"layer3", "layer4"} if name.endswith("_blocks34") else
                    {"layer4"} if name.endswith("_final") else set())
        assert stages == expected, name
        inside_blocks = [n.endswith(".se") for n in model.attn_names]  # a block's attention slot
        assert inside_blocks == [name.endswith("_blocks34")] * len(inside_blocks), name

    costs = {name: (count_params(models[name]), count_macs(models[name], (3, 64, 64)))
             for name in ("plain", "res_block_final", "stt_final", "res_block_stages", "stt_stages")}

    def added(name):  # params and MACs over the plain ResNet
        return [a - b for a, b in zip(costs[name], costs["plain"], strict=True)]

    # Each capacity control costs about what STT adds at the same places: params within 25%; MACs within
    # 25% after the last stage, a third more after every stage (the control's 3x3 conv on stage 1's map).
    for placement, macs_rel in (("final", 0.25), ("stages", 0.4)):
        (control_params, control_macs), (stt_params, stt_macs) = (added(f"{kind}_{placement}")
                                                                  for kind in ("res_block", "stt"))
        assert control_params == pytest.approx(stt_params, rel=0.25), placement
        assert control_macs == pytest.approx(stt_macs, rel=macs_rel), placement


def test_runs_are_appended_with_their_measurements(compared):
    config, runs = compared
    assert [(r["kind"], r["variant"], r["canvas"]) for r in runs] == [
        ("seeded", "plain", 32), ("seeded", "stt_blocks34", 32), ("cost", "stt_blocks34", 64)]
    for row in runs:
        assert row["dataset"] == "fashion_scenes" and row["seed"] == 0 and row["steps"] == 2
        assert 0.0 <= row["mean_iou"] <= 1.0 and 0.0 <= row["pixel_accuracy"] <= 1.0
        assert row["params"] > 1e5 and row["macs"] > 0 and row["train_s"] > 0
        assert 0 < row["step_s"] <= row["train_s"] and row["peak_rss_mib"] > 100
        run_dir = (Path(config.out_dir) / "runs"
                   / seg_comparison.run_name(row["kind"], row["variant"], row["canvas"], row["seed"]))
        assert (run_dir / "model.safetensors").is_file() and not list(run_dir.glob("checkpoint-*"))
        backbone = json.loads((run_dir / "config.json").read_text())["backbone_config"]
        assert backbone["channels"] == [8, 16, 32, 64] and backbone["small_input"] is False
        assert backbone["img_size"] in (row["canvas"], [row["canvas"]] * 2)
        if row["variant"] == "stt_blocks34":
            assert backbone["attn_layer"] == "stt" and backbone["attn_placement"] == "block"
            assert list(backbone["attn_stages"]) == [3, 4]
        else:
            assert backbone["attn_layer"] in (None, "none")
    seeded_stt, cost_stt = runs[1:]
    assert cost_stt["macs"] > 3 * seeded_stt["macs"]  # 64 px against 32 px
    assert cost_stt["params"] >= seeded_stt["params"]  # STT's synthesizers grow with the feature map


def test_a_second_call_runs_nothing_new(seeded, compared):
    runs_path = Path(compared[0].out_dir) / "runs.jsonl"
    markers = [Path(compared[0].out_dir) / "runs" / name / "untouched"
               for name in ("32px-plain-seed0", "32px-stt_blocks34-seed0", "64px-stt_blocks34-cost")]
    for marker in markers:
        marker.write_text("a rerun would delete this folder first")
    before = runs_path.read_text()
    assert len(before.splitlines()) == 3  # the continued comparison did not redo its seeded run
    for config, _ in (seeded, compared):
        assert seg_comparison.run(config) == compared[1]  # every row of the folder, none new
        assert runs_path.read_text() == before
    assert all(marker.is_file() for marker in markers)


def test_report_tables_verdict_and_plot(compared):
    config, _ = compared
    code = seg_comparison.main(["--out_dir", config.out_dir, "--report_only"])
    assert code == 0
    out = Path(config.out_dir)
    text = (out / "results.md").read_text()
    seeded, cost = text.split("### Cost at 64 px")
    assert "### fashion_scenes at 32 px" in seeded
    assert "| variant | seeds | mIoU (%) | p vs stt_blocks34 |" in seeded
    assert "| plain | 1 |" in seeded and "| stt_blocks34 | 1 |" in seeded
    assert "fashion_scenes (1 seed(s)): stt_blocks34 is not yet comparable with plain" in seeded
    assert "no res_block_final runs yet" in seeded
    assert "mIoU" not in cost and "| stt_blocks34 |" in cost and "| plain |" not in cost
    assert "step time vs 32 px" in cost
    with (out / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert [(r["kind"], r["variant"]) for r in summary] == [
        ("seeded", "plain"), ("seeded", "stt_blocks34"), ("cost", "stt_blocks34")]
    assert all((r["mean_iou"] == "") == (r["kind"] == "cost") for r in summary)
    assert (out / "runs.csv").read_text().count("\n") == 4
    assert (out / "miou.png").stat().st_size > 1000


def test_summary_gives_welch_p_against_the_default_placement():
    def run(variant, seed, iou, kind="seeded", canvas=64):
        return dict(kind=kind, variant=variant, dataset="fashion_scenes", canvas=canvas, seed=seed,
                    mean_iou=iou, pixel_accuracy=0.9, params=1, macs=1, train_s=1.0, step_s=1.0,
                    peak_rss_mib=1.0)

    # Equal sizes and spreads: Welch's test is Student's, t = -3.674 on 4 degrees of freedom.
    runs = [run("plain", s, iou) for s, iou in enumerate((0.01, 0.02, 0.03))]
    runs += [run("stt_blocks34", s, iou) for s, iou in enumerate((0.04, 0.05, 0.06))]
    runs += [run("se_final", 0, 0.5), run("plain", 0, None, kind="cost", canvas=224)]
    summary = seg_comparison.summarize_runs(runs)
    by = {(r["kind"], r["variant"]): r for r in summary}
    assert by["seeded", "plain"]["p_vs_default"] == pytest.approx(0.021312, abs=1e-6)
    assert by["seeded", "stt_blocks34"]["p_vs_default"] is None
    assert by["seeded", "se_final"]["p_vs_default"] is None  # one seed: no test
    assert "p_vs_default" not in by["cost", "plain"]
    text = seg_comparison.markdown(summary)
    assert "| plain | 3 | 2.00 ± 1.00 | 0.021 | 90.00 |" in text
    assert "| se_final | 1 | 50.00 ± 0.00 | - |" in text


def test_unknown_variant_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown variants \['cbam'\]; known: \['plain', 'res_block_final'"):
        seg_comparison.main(["--out_dir", str(tmp_path / "x"), "--variants", "plain", "cbam"])
    assert not (tmp_path / "x" / "runs").exists()
