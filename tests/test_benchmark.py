"""stt-hf bench: a --quick run writes its tables and plots; the exponent fit and the memory cap work."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stt_hf import benchmark
from stt_hf.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
BLOCK_COLUMNS = {"device", "precision", "module", "channels", "resolution", "n", "batch", "params", "gflops",
                 "est_mem_gb", "status", "note", "repeats", "fwd_ms", "fwd_bwd_ms", "fwd_img_s",
                 "fwd_bwd_img_s", "peak_fwd_mb", "peak_fwd_bwd_mb"}
MODEL_COLUMNS = {"model", "img_size", "params", "gmacs", "infer_ms", "infer_img_s", "train_step_ms",
                 "train_img_s", "peak_train_mb", "params_vs_ref", "infer_speed_vs_ref", "train_speed_vs_ref"}


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = benchmark.main(["--quick", "--device", "cpu", "--threads", "1", "--out", str(out)])
    return out, result


def test_quick_run_writes_csv_markdown_and_plots(quick):
    out, result = quick
    blocks = read_csv(out / "blocks.csv")
    assert BLOCK_COLUMNS <= set(blocks[0])
    grid = [(c, r, b) for b in benchmark.QUICK["batch_sizes"] for c in benchmark.QUICK["channels"]
            for r in benchmark.QUICK["resolutions"]]
    expected = [(str(c), str(r), str(b), m) for c, r, b in grid for m in benchmark.BLOCK_MODULES]
    assert [(r["channels"], r["resolution"], r["batch"], r["module"]) for r in blocks] == expected
    for row in blocks:
        assert row["status"] == "ok", row
        for key in ("params", "fwd_ms", "fwd_bwd_ms", "fwd_img_s", "peak_fwd_mb", "peak_fwd_bwd_mb"):
            assert float(row[key]) > 0, (key, row)
        assert int(row["repeats"]) >= benchmark.MIN_REPEATS

    fits = read_csv(out / "exponents.csv")
    assert {f["module"] for f in fits} == set(benchmark.BLOCK_MODULES)
    targets = result["sections"][0]["targets"]
    assert {t["module"] for t in targets} == {*benchmark.STT_VARIANTS, "self_attn"}
    assert {t["status"] for t in targets} <= {"PASS", "MISS"}

    models = read_csv(out / "models.csv")
    assert MODEL_COLUMNS <= set(models[0])
    assert [m["model"] for m in models] == [benchmark.REFERENCE_MODEL, *benchmark.QUICK["models"]]
    assert float(models[0]["infer_speed_vs_ref"]) == 1.0 and float(models[0]["train_speed_vs_ref"]) == 1.0
    assert float(models[1]["params_vs_ref"]) > 1.0  # STT adds parameters to resnet50

    md = (out / "results.md").read_text()
    for heading in ("## Blocks (CPU, float32)", "## Scaling with N = H*W", "## Models (CPU, float32)"):
        assert heading in md
    assert "| stt_dense |" in md and "| self_attn |" in md and "| stt_resnet50 |" in md
    for name in ("cpu_latency_vs_n", "cpu_train_latency_vs_n", "cpu_memory_vs_n", "cpu_models"):
        with Image.open(out / f"{name}.png") as img:
            assert img.format == "PNG" and img.size[0] >= 400 and img.size[1] >= 200
        assert f"({name}.png)" in md


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


def test_exponent_targets_pass_and_miss():
    def fit(module, k):
        return dict(device="cpu", module=module, channels=64, batch=1, points=4, n_min=196, n_max=12544,
                    k_fwd=k, k_fwd_bwd=k, k_flops=k, k_peak_mem=k)

    headline = benchmark.headline_fits([fit("stt_dense", 1.2), fit("stt_random", 1.7), fit("self_attn", 1.9)])
    status = {t["module"]: t["status"] for t in benchmark.check_exponents(headline, "cpu")}
    assert status["stt_dense"] == "PASS" and status["stt_random"] == "MISS" and status["self_attn"] == "PASS"
    assert status["stt_mixture"] == "n/a (not measured)"


def test_memory_estimate_skips_the_quadratic_baselines_at_112():
    # The default cap (4 GB) keeps STT at 112x112, batch 8, and skips the N x N baselines there.
    for module in ("self_attn", "flat_dense"):
        assert benchmark.estimate_peak_gb(module, 256, 112, 112, 8, 10**5, backward=True) > 4
    for module in ("stt_dense", "se", "cbam"):
        assert benchmark.estimate_peak_gb(module, 256, 112, 112, 8, 10**5, backward=True) < 4


def test_rows_over_the_cap_are_skipped_not_run(tmp_path, capsys):
    # At C=16, 14x14 the STT estimate is ~0.15 MB and self-attention's ~0.7 MB: a 0.4 MB cap splits them.
    result = benchmark.main(["--channels", "16", "--resolutions", "14", "--batch_sizes", "1",
                             "--repeats", "1", "--modules", "stt_dense", "self_attn", "--models", "none",
                             "--max_mem_gb", "0.0004", "--device", "cpu", "--threads", "1",
                             "--out", str(tmp_path)])
    rows = {r["module"]: r for r in result["sections"][0]["blocks"]}
    assert rows["stt_dense"]["status"] == "ok"
    assert rows["self_attn"]["status"] == "skipped" and rows["self_attn"]["note"].startswith("est. ")
    assert rows["self_attn"]["fwd_ms"] is None and rows["self_attn"]["params"] > 0  # counted, not run
    csv_rows = read_csv(tmp_path / "blocks.csv")
    assert [r["status"] for r in csv_rows] == ["ok", "skipped"]
    assert not (tmp_path / "models.csv").exists()
    assert "skipped (est. " in capsys.readouterr().out


def test_cli_and_script_entry_points():
    args = build_parser().parse_args(["bench", "--quick", "--max-mem-gb", "2", "--batch_sizes", "1", "2"])
    assert args.func is benchmark.run_command and args.max_mem_gb == 2.0 and args.batch_sizes == [1, 2]
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main is benchmark.main


def test_model_speed_targets_pass_and_miss():
    rows = [dict(model="resnet50", infer_speed_vs_ref=1.0, train_speed_vs_ref=1.0),
            dict(model="stt_resnet50", infer_speed_vs_ref=0.95, train_speed_vs_ref=0.85)]
    assert benchmark.model_targets(rows, "resnet50") == [
        "- target: stt_resnet50 infer speed >= 0.93x resnet50: 0.950x PASS",
        "- target: stt_resnet50 train speed >= 0.90x resnet50: 0.850x MISS",
    ]
    assert benchmark.model_targets(rows, "resnet18") == []  # no target against another reference
