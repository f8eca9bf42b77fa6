"""stt-hf bench: a tiny run writes one schema (CSV, JSON, Markdown, plots), each block row measured in its
own worker process with its RSS; the targets table, exponent fit, memory cap and option checks work."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stt_hf.cli import build_parser
from stt_hf.cli import main as cli_main
from stt_hf.experiments import benchmark


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def run(argv: list[str]) -> dict:
    """benchmark.main(argv) on the CPU with one thread, leaving this process's thread count as it was."""
    threads = torch.get_num_threads()
    try:
        return benchmark.main([*argv, "--device", "cpu", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """A --quick run at one tiny grid point; records what each block worker said when it was ready."""
    out = tmp_path_factory.mktemp("bench")
    ready = []

    class RecordingWorker(benchmark.BlockWorker):
        def request(self, command=None):
            reply = super().request(command)
            if reply.get("ready"):
                ready.append(reply)
            return reply

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(benchmark.blocks, "BlockWorker", RecordingWorker)  # the grid starts its workers
        result = run(["--quick", "--resolutions", "7", "--modules", "stt_dense", "self_attn", "--img_size",
                      "32", "--out", str(out)])
    return out, result, ready


def test_quick_run_writes_one_schema(quick):
    out, result, _ = quick
    for name, columns in (("blocks.csv", benchmark.BLOCK_COLUMNS), ("exponents.csv", benchmark.FIT_COLUMNS),
                          ("cost.csv", benchmark.COST_COLUMNS), ("models.csv", benchmark.MODEL_COLUMNS),
                          ("targets.csv", benchmark.TARGET_COLUMNS)):
        with (out / name).open() as f:
            assert tuple(next(csv.reader(f))) == columns, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["preset"] == "quick" and saved["meta"]["command"].startswith("stt-hf bench ")
    section = saved["sections"][0]
    for key, columns in (("blocks", benchmark.BLOCK_COLUMNS), ("cost", benchmark.COST_COLUMNS),
                         ("models", benchmark.MODEL_COLUMNS), ("targets", benchmark.TARGET_COLUMNS)):
        assert section[key] and all(tuple(row) == columns for row in section[key]), key
    assert result["sections"][0]["targets"] == section["targets"]


def test_block_rows_run_in_their_own_processes_with_rss(quick):
    out, _, ready = quick
    pids = [reply["pid"] for reply in ready]
    assert len(pids) == 2 and len(set(pids)) == 2 and os.getpid() not in pids  # one fresh worker per row

    blocks = read_csv(out / "blocks.csv")
    assert [(r["channels"], r["resolution"], r["batch"], r["module"]) for r in blocks] == [
        ("16", "7", "1", "stt_dense"), ("16", "7", "1", "self_attn")]
    for row in blocks:
        assert row["status"] == "ok" and row["note"] == "", row
        assert int(row["repeats"]) >= benchmark.MIN_REPEATS
        for key in ("params", "gflops", "fwd_ms", "fwd_bwd_ms", "fwd_img_s", "peak_fwd_mb", "peak_fwd_bwd_mb",
                    "rss_mb", "fwd_vs_stt", "peak_fwd_vs_stt", "rss_vs_stt"):
            assert float(row[key]) > 0, (key, row)
        assert row["rss_method"] in ("VmHWM", "ru_maxrss")
    assert float(blocks[0]["fwd_vs_stt"]) == 1.0  # STT against itself


def test_quick_run_measures_cost_models_and_targets(quick):
    out, _, _ = quick
    cost = read_csv(out / "cost.csv")
    assert [r["config"] for r in cost] == list(benchmark.COST_CONFIGS)
    for row in cost:
        for key in ("block_ms", "convs_ms", "conv_pair_ms", "trunk_ms", "convs_gmacs_s", "trunk_gmacs_s",
                    "block_vs_convs", "values_ms", "synths_ms", "products_ms", "output_ms"):
            assert float(row[key]) > 0, (key, row)
        assert 0 < int(row["block_ops"]) <= benchmark.MAX_BLOCK_OPS  # the ops one STT forward launches
        # The convs' GMAC/s are those of the two convs alone (BN has no MACs): C -> C/16 -> C.
        c, size, batch = int(row["channels"]), int(row["resolution"]), int(row["batch"])
        macs = 2 * c * (c // benchmark.COST_REDUCTION) * size * size * batch
        assert float(row["convs_gmacs_s"]) == pytest.approx(macs / float(row["conv_pair_ms"]) / 1e6, rel=1e-6)

    models = read_csv(out / "models.csv")
    assert [m["model"] for m in models] == [benchmark.REFERENCE_MODEL, "stt_resnet50"]
    assert float(models[0]["infer_speed_vs_ref"]) == 1.0 and float(models[0]["train_speed_vs_ref"]) == 1.0
    for kind in ("infer", "train"):  # the reference against itself: every paired ratio is 1
        assert float(models[0][f"{kind}_speed_ci_low"]) == float(models[0][f"{kind}_speed_ci_high"]) == 1.0
        low, mid, high = (float(models[1][f"{kind}_speed_{k}"]) for k in ("ci_low", "vs_ref", "ci_high"))
        assert 0 < low <= mid <= high
    assert float(models[1]["params_vs_ref"]) > 1.0  # STT adds parameters to resnet50
    assert models[1]["compiled_infer_ms"] == ""  # no --compile

    status = {t["target"]: t["status"] for t in read_csv(out / "targets.csv")}
    assert list(status) == [t.label for t in benchmark.TARGETS]
    for target in benchmark.TARGETS:  # one grid point: no exponents, no 256:56 or 128:112 block rows
        # and no capacity control in the quick preset
        measured = target.kind == "cost" or (target.kind == "model" and "_vs_control" not in target.metric)
        assert (status[target.label] in ("PASS", "MISS")) == measured, target

    md = (out / "results.md").read_text()
    for heading in ("## Blocks (CPU, float32)", "## Scaling with N = H*W", "## STT block cost",
                    "## Models (CPU, float32)", "## Targets (CPU, float32)"):
        assert heading in md
    assert "| stt_dense |" in md and "| self_attn |" in md and "| stt_resnet50 |" in md
    for name in ("cpu_latency_vs_n", "cpu_train_latency_vs_n", "cpu_memory_vs_n", "cpu_models"):
        with Image.open(out / f"{name}.png") as img:
            assert img.format == "PNG" and img.size[0] >= 400 and img.size[1] >= 200
        assert f"({name}.png)" in md


def test_paired_ratio_is_the_median_of_per_round_ratios():
    reference, times = [2.0, 2.0, 2.0, 4.0, 2.0], [1.0, 2.0, 4.0, 2.0, 2.0]  # ratios 2, 1, 0.5, 2, 1
    mid, low, high = benchmark.paired_ratio(reference, times)
    assert mid == 1.0 and 0.5 <= low <= 1.0 <= high <= 2.0
    assert benchmark.paired_ratio(reference, times) == (mid, low, high)  # seeded: reproducible
    assert benchmark.paired_ratio([1.0] * 4, [1.0] * 4) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):  # rounds must pair up
        benchmark.paired_ratio([1.0, 2.0], [1.0])


def test_model_specs_pass_options_to_create_model():
    assert benchmark.parse_model_spec("resnet50") == ("resnet50", {})
    assert benchmark.parse_model_spec("stt_resnet50:attn_layer=res_block, stt_heads=4,stt_modes=hw") == (
        "stt_resnet50", {"attn_layer": "res_block", "stt_heads": 4, "stt_modes": "hw"})
    name, _ = benchmark.parse_model_spec(benchmark.CAPACITY_CONTROL)
    control = benchmark.create_model(benchmark.CAPACITY_CONTROL, 64, device="meta")
    stt = benchmark.create_model(name, 64, device="meta")
    from timm.models.resnet import Bottleneck

    from stt_hf.layers import STT
    # The control sits where STT sits, a bottleneck in place of each STT block.
    assert stt.attn_names == control.attn_names and stt.attn_names
    for where in stt.attn_names:
        assert isinstance(stt.get_submodule(where), STT)
        assert isinstance(control.get_submodule(where), Bottleneck)


@pytest.mark.parametrize("spec, message", [
    ("stt_resnet50:attn_layer", "each option must be key=value"),
    ("stt_resnet50:=3", "each option must be key=value"),
    ("no_such_net", "'no_such_net' is not a registered timm model"),
])
def test_bad_model_specs_raise(spec, message):
    with pytest.raises(ValueError, match=message):
        benchmark.parse_model_spec(spec)


def test_compile_adds_compiled_inference_columns():
    import argparse

    args = argparse.Namespace(reference="resnet10t", models=[], img_size=32, infer_batch=1, train_batch=2,
                              warmup=1, model_repeats=1, compile="eager",  # eager: dynamo without codegen
                              fused=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        [row] = benchmark.run_models(args, torch.device("cpu"), "fp32")
    finally:
        torch.set_num_threads(threads)
    assert row["compiled_infer_ms"] > 0 and row["compiled_infer_img_s"] > 0
    assert row["fused_infer_ms"] > 0 and row["fused_speed_vs_ref"] == 1.0
    assert row["compiled_speed_vs_ref"] == 1.0 and tuple(row) == benchmark.MODEL_COLUMNS
    header = "| fused img/s | fused speed | compiled img/s | compiled speed |"
    assert header in benchmark.render_models([row])[2]


def test_control_ratios_pair_each_mode_with_the_capacity_control_by_round():
    from stt_hf.experiments.benchmark.models import ModelCase, add_control_ratios

    def case(model, scale):
        row = dict.fromkeys(benchmark.MODEL_COLUMNS)
        row.update(model=model)
        times = {kind: [t * scale for t in (1.0, 2.0, 4.0)] for kind in ("infer", "fused_infer")}
        return ModelCase(row, None, None, times=times)

    cases = [case("resnet50", 1.0), case("stt_resnet50", 1.0), case(benchmark.CAPACITY_CONTROL, 1.1)]
    rows = [c.row for c in cases]
    add_control_ratios(rows, cases)
    assert rows[1]["infer_speed_vs_control"] == pytest.approx(1.1)  # control time / STT time
    assert rows[1]["fused_speed_vs_control_ci_low"] == pytest.approx(1.1)
    assert rows[2]["infer_speed_vs_control"] == pytest.approx(1.0)
    assert rows[1]["compiled_speed_vs_control"] is None  # not measured
    for row in rows:  # the columns the models table always shows
        row.update({k: 1.0 for k in row if row[k] is None and k.split("_")[0] not in ("fused", "compiled")
                    and "_vs_control" not in k}, note="", img_size=32)
        row["fused_infer_ms"] = row["fused_infer_img_s"] = 1.0
    md = "\n".join(benchmark.render_models(rows))
    assert "| stt_resnet50 | 1.100x (1.100-1.100) | 1.100x (1.100-1.100) |" in md


def test_a_killed_worker_is_reported_not_raised_past():
    spec = dict(module="stt_dense", channels=8, size=4, batch=1, device="cpu", precision="fp32",
                reduction=None, forward_only=True, threads=1)
    worker = benchmark.BlockWorker(spec)
    try:
        worker.proc.kill()  # as the kernel's OOM killer would
        with pytest.raises(RuntimeError, match="killed by signal 9, likely out of memory"):
            worker.request("profile")
    finally:
        worker.close()


def section(blocks=(), cost=(), models=(), fits=()) -> dict:
    return dict(device="cpu", precision="fp32", blocks=list(blocks), cost=list(cost), models=list(models),
                fits=list(fits), targets=[])


def test_targets_pass_and_miss_on_synthetic_numbers():
    def block(module, channels, size, batch, fwd, peak):
        return dict(module=module, channels=channels, resolution=size, batch=batch, fwd_vs_stt=fwd,
                    peak_fwd_vs_stt=peak)

    def fit(module, k):
        return dict(device="cpu", module=module, channels=64, batch=1, points=4, n_min=196, n_max=12544,
                    k_fwd=k)

    blocks = [block("self_attn", 256, 56, 1, 6.0, 9.0),  # the largest batch measured decides
              block("self_attn", 256, 56, 8, 4.0, 9.0), block("stt_dense", 256, 56, 8, 1.0, 1.0),
              block("self_attn", 128, 112, 8, 25.0, 60.0)]
    cost = [dict(config="1024:14x14", batch=8, block_vs_convs=1.1, trunk_vs_convs_gmacs=1.4)]
    cost = [dict(cost[0], block_ops=20)]
    models = [dict(model="resnet50", reference="resnet50", img_size=224, params_vs_ref=1.0, gmacs_vs_ref=1.0,
                   infer_speed_vs_ref=1.0, train_speed_vs_ref=1.0),
              dict(model="stt_resnet50", reference="resnet50", img_size=224, params_vs_ref=1.10,
                   gmacs_vs_ref=1.12, infer_speed_vs_ref=0.95, train_speed_vs_ref=0.85,
                   infer_speed_vs_control=1.02, infer_speed_vs_control_ci_low=0.99,
                   infer_speed_vs_control_ci_high=1.04, fused_speed_vs_control=0.97,
                   compiled_speed_vs_control=None)]
    fits = [fit("stt_dense", 1.2), fit("stt_random", 1.7), fit("self_attn", 1.9)]
    results = {t["target"]: t for t in benchmark.check_targets(section(blocks, cost, models, fits))}
    status = {label: t["status"] for label, t in results.items()}
    assert status == {
        "stt_dense: forward latency ~ N^k": "PASS",
        "stt_random: forward latency ~ N^k": "MISS",
        "stt_factorized_random: forward latency ~ N^k": "n/a (not measured)",
        "stt_mixture: forward latency ~ N^k": "n/a (not measured)",
        "self_attn: forward latency ~ N^k": "PASS",
        "self_attn / STT forward latency, 256:56x56": "MISS",
        "self_attn / STT peak memory, 256:56x56": "PASS",
        "self_attn / STT forward latency, 128:112x112": "PASS",
        "STT block / its two 1x1 convs + BN, 1024:14x14": "PASS",
        "STT block / its two 1x1 convs + BN, 2048:7x7": "n/a (not measured)",
        "STT block ATen ops per eval forward, 1024:14x14": "PASS",
        "STT block ATen ops per eval forward, 2048:7x7": "n/a (not measured)",
        "trunk 1x1 conv GMAC/s / STT convs' GMAC/s, 1024:14x14": "MISS",
        "trunk 1x1 conv GMAC/s / STT convs' GMAC/s, 2048:7x7": "n/a (not measured)",
        "stt_resnet50 / resnet50 params": "PASS",
        "stt_resnet50 / resnet50 GMACs": "MISS",
        "stt_resnet50 / capacity control inference speed, eager": "PASS",
        "stt_resnet50 / capacity control inference speed, fused": "MISS",
        "stt_resnet50 / capacity control inference speed, compiled": "n/a (not measured)",
        "stt_resnet50 / resnet50 training step speed": "MISS",
    }
    latency = results["self_attn / STT forward latency, 256:56x56"]
    assert latency["measured"] == 4.0 and latency["where"] == "B=8"
    assert latency["margin"] == pytest.approx(-1.0)
    assert results["stt_resnet50 / resnet50 params"]["margin"] == pytest.approx(0.05)
    assert results["stt_random: forward latency ~ N^k"]["margin"] == pytest.approx(-0.1)
    eager = results["stt_resnet50 / capacity control inference speed, eager"]
    assert eager["where"] == "224 px, 95% CI 0.990-1.040" and eager["required"] == ">= 1x"

    other = [dict(m, reference="resnet18") for m in models]  # the model targets are against resnet50 only
    checked = benchmark.check_targets(section(models=other))
    assert {t["status"] for t in checked if "resnet50 /" in t["target"]} == {"n/a (not measured)"}
    table = "\n".join(benchmark.render_targets(benchmark.check_targets(section(cost=cost))))
    row = "| STT block / its two 1x1 convs + BN, 1024:14x14 | 1.10x | <= 1.2x | +0.10x | PASS | B=8 |"
    assert row in table


@pytest.mark.parametrize("k", [0.5, 1.5, 2.0])
def test_exponent_fit_recovers_a_known_exponent(k):
    n = np.array([14, 28, 56, 112]) ** 2
    noise = np.random.default_rng(0).uniform(0.97, 1.03, size=len(n))
    assert benchmark.fit_exponent(n, 3e-4 * n**k * noise) == pytest.approx(k, abs=0.03)
    assert benchmark.fit_exponent(n, 5.0 * n**k) == pytest.approx(k, abs=1e-9)


def test_exponent_fit_needs_two_sizes():
    assert benchmark.fit_exponent([196], [1.0]) is None
    assert benchmark.fit_exponent([196, 196], [1.0, 2.0]) is None
    assert benchmark.fit_exponent([196, 784, 3136], [1.0, None, 4.0]) == pytest.approx(0.5)


def test_memory_estimate_skips_the_quadratic_baselines_at_112():
    # The grid's cap (4 GB) keeps STT at 112x112, batch 8, and skips the N x N baselines there.
    for module in ("self_attn", "flat_dense"):
        assert benchmark.estimate_peak_gb(module, 256, 112, 112, 8, 10**5, backward=True) > 4
    for module in ("stt_dense", "se", "cbam"):
        assert benchmark.estimate_peak_gb(module, 256, 112, 112, 8, 10**5, backward=True) < 4


def test_memory_estimate_of_axial_attention_is_between():
    """Axial and criss-cross attention hold (B, N, H + W) maps: far below the N x N baselines at 112x112,
    above a block that holds only copies of the feature map."""
    def estimate(module):
        return benchmark.estimate_peak_gb(module, 256, 112, 112, 8, 10**5, backward=True)

    for module in ("axial", "criss_cross"):
        assert estimate("stt_dense") < estimate(module) < estimate("self_attn") / 10 < 4


def test_rows_over_the_cap_are_counted_not_run(tmp_path, capsys):
    result = run(["--configs", "16:14x14", "--batch_sizes", "1", "--modules", "stt_dense", "self_attn",
                  "--max_mem_gb", "0", "--skip_cost", "--skip_models", "--out", str(tmp_path)])
    for row in result["sections"][0]["blocks"]:
        assert row["status"] == "skipped" and row["note"].startswith("est. "), row
        assert row["fwd_ms"] is None and row["rss_mb"] is None and row["params"] > 0  # counted, not run
    assert [r["status"] for r in read_csv(tmp_path / "blocks.csv")] == ["skipped", "skipped"]
    assert not (tmp_path / "models.csv").exists() and not (tmp_path / "cost.csv").exists()
    assert "skipped (est. " in capsys.readouterr().out


def parse(argv: list[str]):
    return build_parser().parse_args(["bench", *argv])


def test_presets_fill_what_is_not_given():
    args = benchmark.resolve_args(parse(["--preset", "targets"]))
    assert args.configs == ["256:28x28", "256:56x56", "128:112x112"] and args.batch_sizes == [8]
    assert args.forward_only and args.channels == [128, 256] and args.resolutions == [28, 56, 112]
    assert args.max_mem_source == "80% of available memory" and args.max_mem_gb > 0
    assert args.modules == ["stt_dense", "self_attn", "flat_dense", "flat_random", "axial", "criss_cross"]
    args = benchmark.resolve_args(parse(["--preset", "targets", "--channels", "32", "--no-forward_only"]))
    assert not args.configs and args.channels == [32] and args.resolutions == [28, 56, 112]
    assert not args.forward_only
    assert args.fused and args.compile == "inductor"  # eager, fused and compiled beside the control
    assert args.models == ["stt_resnet50", benchmark.CAPACITY_CONTROL]
    args = benchmark.resolve_args(parse(["--preset", "targets", "--compile", "none", "--no-fused"]))
    assert not args.fused and args.compile is None
    args = benchmark.resolve_args(parse(["--quick", "--models", "none", "--compile"]))
    assert args.models == [] and args.repeats == 1 and args.compile == "inductor" and not args.fused


@pytest.mark.parametrize("argv, message", [
    (["--configs", "16:8x9"], "H = W"),
    (["--configs", "abc"], "not C:HxW"),
    (["--configs", "16:8", "--channels", "16"], "one or the other"),
    (["--warmup", "0"], "--warmup must be at least 1"),
    (["--batch_sizes", "0"], "--batch_sizes must be positive"),
    (["--models", "stt_resnet50:attn_layer"], "each option must be key=value"),
    (["--reference", "no_such_net"], "not a registered timm model"),
])
def test_bad_options_fail_with_a_message(argv, message, capsys, tmp_path):
    args = parse([*argv, "--out", str(tmp_path)])
    assert args.func is benchmark.run_command
    assert cli_main(["bench", *argv, "--out", str(tmp_path)]) == 2  # the error path of every subcommand
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing measured, nothing written


def test_unparsable_options_are_argparse_errors(capsys):
    for argv in (["--max_mem_gb", "lots"], ["--modules", "nope"], ["--preset", "huge"]):
        with pytest.raises(SystemExit) as err:
            parse(argv)
        assert err.value.code == 2
    assert "expected a number of GB or 'auto'" in capsys.readouterr().err
