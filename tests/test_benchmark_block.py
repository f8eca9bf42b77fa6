"""Smoke tests of scripts/benchmark_block.py: tiny --quick runs write the expected rows and numbers."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_block.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_block", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def run(bench, argv: list[str]) -> dict:
    """bench.main(argv), leaving this process's torch thread count as it found it."""
    threads = torch.get_num_threads()
    try:
        return bench.main(argv)
    finally:
        torch.set_num_threads(threads)


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_quick_run_writes_blocks_models_and_targets(bench, tmp_path, capsys):
    run(bench, ["--quick", "--configs", "16:8x8", "--modules", "stt", "self_attn", "--img-size", "32",
                "--threads", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out

    blocks = read_csv(tmp_path / "blocks.csv")
    assert [(r["config"], r["module"]) for r in blocks] == [("16:8x8", "stt"), ("16:8x8", "self_attn")]
    for row in blocks:
        assert row["note"] == "", row
        assert int(row["repeats"]) >= bench.MIN_REPEATS
        for key in ("params", "gflops", "latency_ms", "peak_mem_mb", "rss_mb", "latency_vs_stt",
                    "peak_mem_vs_stt", "rss_vs_stt"):
            assert float(row[key]) > 0, (key, row)
    assert float(blocks[0]["latency_vs_stt"]) == 1.0  # STT against itself

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["batch"] == 2  # --quick
    assert [r["model"] for r in results["models"]] == ["resnet50", "stt_resnet50"]
    for row in results["models"]:
        for key in ("params", "gmacs", "throughput", "latency_ms"):
            assert row[key] > 0, (key, row)
    assert results["models"][1]["params"] > results["models"][0]["params"]
    assert results["models"][0]["throughput_ratio"] == 1.0 and results["models"][0]["train_ratio"] == 1.0
    assert results["models"][1]["train_step_ms"] > 0

    cost = results["cost"]  # the STT block against its own convolutions, at the cost configs
    assert [r["config"] for r in cost] == list(bench.COST_CONFIGS)
    for row in cost:
        assert row["block_ms"] > 0 and row["convs_ms"] > 0 and row["trunk_gmacs_s"] > 0
        assert 20 < row["block_ops"] < 200  # the operators one forward dispatches

    targets = read_csv(tmp_path / "targets.csv")
    assert len(targets) == len(bench.TARGETS)
    statuses = {t["target"]: t["status"] for t in targets}
    for target in bench.TARGETS:  # block targets need configs this run skipped; cost rows always run
        expected = {"n/a (not measured)"} if target.config and target.baseline != "cost" else {"PASS", "MISS"}
        assert statuses[target.label] in expected, target
    assert "| 16:8x8 | self_attn |" in (tmp_path / "table.md").read_text()
    assert "### Targets" in printed


def test_rows_over_the_memory_limit_are_na_not_a_crash(bench, tmp_path, capsys):
    result = run(bench, ["--quick", "--configs", "16:8x8", "--max-mem-gb", "0", "--skip-models",
                         "--skip-cost", "--threads", "1", "--out", str(tmp_path)])
    assert [r["module"] for r in result["blocks"]] == list(bench.MODULES)
    for row in result["blocks"]:
        assert row["latency_ms"] is None and row["peak_mem_mb"] is None and row["rss_mb"] is None
        assert row["note"].startswith("est. ")
        assert row["params"] > 0 and row["gflops"] > 0  # counted without running
    assert "n/a (est. " in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["models"] == []
