"""The same-recipe comparison: real `stt-hf train` runs (tiny), robustness scoring, resuming, the report."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from scipy.stats import ttest_ind

import stt_hf  # noqa: F401  (registers the models)
from stt_hf.experiments import main_comparison
from stt_hf.experiments.ablation import CORRUPTIONS
from stt_hf.experiments.main_comparison import VARIANTS, ComparisonConfig
from stt_hf.experiments.runs import holm, welch_interval
from stt_hf.reporting.profiling import count_macs, count_params

TINY_TRAIN = ["--max_train_samples", "64", "--max_eval_samples", "32", "--max_steps", "2",
              "--per_device_train_batch_size", "32", "--bf16", "false"]


def test_every_variant_sits_where_the_default_stt_block_sits():
    default = timm.create_model("stt_resnet10_s", num_classes=10)
    for variant, options in VARIANTS.items():
        model = timm.create_model("stt_resnet10_s", num_classes=10, **options)
        if variant == "plain":
            assert model.attn_names == []
        else:
            assert model.attn_names == default.attn_names == ["layer4.1"], variant


def test_capacity_control_matches_stt_in_parameters_and_macs():
    plain, stt, control = (timm.create_model("stt_resnet10_s", num_classes=10, attn_layer=a)
                           for a in ("none", "stt", "res_block"))
    def cost(m):
        return count_params(m), count_macs(m, (3, 28, 28))

    added = {name: [a - b for a, b in zip(cost(m), cost(plain), strict=True)]
             for name, m in (("stt", stt), ("res_block", control))}
    for i in (0, 1):  # params, MACs: within 25% of STT's
        assert added["res_block"][i] == pytest.approx(added["stt"][i], rel=0.25), added
    block = control.get_submodule("layer4.1")
    assert not any("attn" in type(m).__name__.lower() for m in block.modules())
    control.eval()
    x = torch.randn(2, 256, 4, 4)
    assert torch.equal(block(x), torch.relu(x))  # zero-initialised last BN: an identity residual at start


def test_run_appends_resumes_and_reports(tmp_path):
    config = ComparisonConfig(out_dir=str(tmp_path / "cmp"), variants=["plain", "stt"],
                              datasets=["mnist_5k"], seeds=[0], train_args=TINY_TRAIN)
    runs = main_comparison.run(config)
    assert [(r["variant"], r["seed"]) for r in runs] == [("plain", 0), ("stt", 0)]
    for row in runs:
        assert 0.0 <= row["acc"] <= 1.0 and row["params"] > 1e6 and row["train_s"] > 0
        assert set(CORRUPTIONS) <= set(row) and all(0.0 <= row[c] <= 1.0 for c in CORRUPTIONS)
        run_dir = tmp_path / "cmp" / "runs" / main_comparison.run_name(row["variant"], "mnist_5k", 0)
        assert (run_dir / "model.safetensors").is_file() and not list(run_dir.glob("checkpoint-*"))
        # The run is the main job's command: only the dataset, seed, model options and folder differ.
        command = json.loads((run_dir / "metrics.json").read_text())
        assert command["global_step"] == 2
    runs_dir = tmp_path / "cmp" / "runs"
    stt_config = json.loads((runs_dir / "mnist_5k-stt-seed0" / "config.json").read_text())
    plain_config = json.loads((runs_dir / "mnist_5k-plain-seed0" / "config.json").read_text())
    assert stt_config["attn_layer"] == "stt" and plain_config["attn_layer"] in (None, "none")

    # Resuming: nothing left to do, runs.jsonl unchanged.
    before = (tmp_path / "cmp" / "runs.jsonl").read_text()
    assert main_comparison.run(config) == runs
    assert (tmp_path / "cmp" / "runs.jsonl").read_text() == before

    result = main_comparison.report(config.out_dir)
    text = (tmp_path / "cmp" / "results.md").read_text()
    assert result["runs"] == 2 and "| plain | 1 |" in text and "| stt | 1 |" in text
    assert "mnist_5k (1 seed(s)): stt is" in text and "no res_block runs yet" in text
    assert (tmp_path / "cmp" / "accuracy.png").stat().st_size > 1000


def test_verdict_reads_the_seed_spread():
    def row(variant, acc, std):
        return dict(dataset="d", variant=variant, seeds=3, acc=acc, acc_std=std)

    summary = [row("plain", 0.90, 0.002), row("res_block", 0.905, 0.002), row("stt", 0.912, 0.003)]
    assert "ahead of plain (+1.20 points" in main_comparison.verdict(summary, "d")
    assert "ahead of res_block (+0.70 points" in main_comparison.verdict(summary, "d")
    summary[2] = row("stt", 0.906, 0.004)
    assert "within the seed spread of res_block" in main_comparison.verdict(summary, "d")
    summary[2] = row("stt", 0.89, 0.001)
    assert "behind plain" in main_comparison.verdict(summary, "d")
    summary[2] = dict(row("stt", 0.93, 0.0), seeds=1)  # one seed: no spread, so no verdict either way
    text = main_comparison.verdict(summary, "d")
    assert "ahead" not in text and "not yet comparable with plain (+3.00 points" in text
    assert "there are 1 and 3" in text


def test_unknown_variant_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown variants \\['cbam'\\]"):
        main_comparison.run(ComparisonConfig(out_dir=str(tmp_path), variants=["cbam"]))


def test_summary_gives_welch_p_against_stt():
    def run(variant, seed, acc):
        return dict(dataset="d", variant=variant, seed=seed, acc=acc, params=1, macs=1, train_s=1.0,
                    **{c: 0.5 for c in CORRUPTIONS})

    # Equal sizes and spreads: Welch's test is Student's, t = -3.674 on 4 degrees of freedom.
    runs = [run("plain", s, a) for s, a in enumerate((0.01, 0.02, 0.03))]
    runs += [run("stt", s, a) for s, a in enumerate((0.04, 0.05, 0.06))]
    runs += [run("se", 0, 0.5)]  # one seed: no test
    by = {r["variant"]: r for r in main_comparison.summarize_runs(runs)}
    assert by["plain"]["p_vs_stt"] == pytest.approx(0.021312, abs=1e-6)
    assert by["stt"]["p_vs_stt"] is None and by["se"]["p_vs_stt"] is None
    text = main_comparison.markdown(list(by.values()))
    assert "| plain | 3 | 2.00 ± 1.00 | 0.021 |" in text and "| se | 1 | 50.00 ± 0.00 | - |" in text


def test_holm_against_a_hand_computed_family():
    # Sorted 0.01 < 0.03 < 0.04 of m = 3: 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, then max(0.06, 1 * 0.04) = 0.06
    # (the step-down keeps the order); the test that could not run stays None and is not counted.
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": None})
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}  # capped at 1
    assert holm({"only": 0.02}) == {"only": 0.02}


def test_welch_interval_by_hand_and_against_scipy():
    # Equal spreads (variance 1e-4 each, 3 seeds): se = sqrt(2e-4 / 3), 4 degrees of freedom, t = 2.776445.
    diff, low, high = welch_interval([0.04, 0.05, 0.06], [0.01, 0.02, 0.03])
    assert diff == pytest.approx(0.03)
    assert (low, high) == pytest.approx((0.03 - 0.022670, 0.03 + 0.022670), abs=1e-6)
    # Unequal spreads and sizes: the Welch-Satterthwaite degrees of freedom, as scipy computes them.
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0]
    expected = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert welch_interval(a, b)[1:] == pytest.approx((expected.low, expected.high), rel=1e-9)
    assert welch_interval([0.5], [0.1, 0.2]) is None and welch_interval([1.0, 1.0], [1.0, 1.0]) is None


def synthetic_run(variant, seed, acc, corrupted):
    return dict(dataset="fashion_mnist", variant=variant, seed=seed, acc=acc, params=1, macs=1, train_s=1.0,
                wall_s=1.0, **dict.fromkeys(CORRUPTIONS, corrupted))


def test_report_gives_holm_the_interval_and_the_robustness_table(tmp_path):
    """A small runs.jsonl: STT ahead of plain (p = 0.021 raw) and of self-attention under every corruption,
    behind nothing; one axial seed, so nothing is said against axial."""
    runs = [synthetic_run("plain", s, a, 0.50) for s, a in enumerate((0.01, 0.02, 0.03))]
    runs += [synthetic_run("stt", s, a, c) for s, (a, c) in enumerate(((0.04, 0.70), (0.05, 0.71),
                                                                       (0.06, 0.72)))]
    runs += [synthetic_run("self_attn", s, a, c) for s, (a, c) in enumerate(((0.03, 0.50), (0.05, 0.52),
                                                                             (0.04, 0.51)))]
    runs += [synthetic_run("axial", 0, 0.05, 0.6)]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    summary = {r["variant"]: r for r in main_comparison.report(tmp_path)["summary"]}
    # Two tests in the family (axial has one seed): plain p = 0.0213 and self_attn p = 0.1835.
    p_self = summary["self_attn"]["p_vs_stt"]
    assert summary["plain"]["p_holm"] == pytest.approx(2 * 0.021312, abs=1e-6)
    assert summary["self_attn"]["p_holm"] == pytest.approx(max(2 * 0.021312, p_self))
    assert summary["axial"]["p_holm"] is None and summary["stt"]["p_holm"] is None
    text = (tmp_path / "results.md").read_text()
    assert ("STT - plain: +3.00 points, 95% interval [+0.73, +5.27] (Welch); p = 0.021 raw, 0.043 "
            "Holm-adjusted over STT vs the 2 other variants: STT is ahead of plain, also after the "
            "correction." in text)
    assert "| plain | 3 | 2.00 ± 1.00 | 0.021 | 0.043 | +3.00 [+0.73, +5.27] |" in text
    # Robustness: STT 71 ± 1 against self-attention 51 ± 1 under each of the 8 corruptions.
    assert '"Keeping robustness compared to self_attn" holds: STT is more robust' in text
    assert "ahead under " + ", ".join(CORRUPTIONS) in text
    assert "Not yet answerable against axial" in text
    row = next(line for line in text.splitlines() if line.startswith("| noise_0.1 |"))
    p = ttest_ind([0.70, 0.71, 0.72], [0.50, 0.52, 0.51], equal_var=False).pvalue
    assert row.startswith("| noise_0.1 | 71.00 ± 1.00 (3) | 51.00 ± 1.00 (3) | 60.00 ± 0.00 (1) | "
                          "+20.00 [") and f"| {p:.3f} | {min(1, 8 * p):.3f} | - | - | - |" in row
