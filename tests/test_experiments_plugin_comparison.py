"""The plug-in comparison: the main job's command on a plugged ConvNeXt, variants at one place."""

from __future__ import annotations

import json

import pytest
import timm

import stt_hf  # noqa: F401  (registers the models)
from stt_hf.experiments import plugin_comparison
from stt_hf.experiments.plugin_comparison import VARIANTS, PluginComparisonConfig
from stt_hf.reporting.profiling import count_macs, count_params
from stt_hf.tasks.train import parse_args


def test_variants_sit_at_one_place_with_matching_capacity():
    models = {
        v: timm.create_model("stt_convnext_s", num_classes=10, img_size=28, **VARIANTS[v]) for v in VARIANTS
    }
    assert models["plain"].attn_names == []
    assert models["stt"].attn_names == models["res_block"].attn_names == ["stages.3.blocks.attn"]
    cost = {v: (count_params(m), count_macs(m, (3, 28, 28))) for v, m in models.items()}
    for i in (0, 1):  # params, MACs the control adds: within 25% of what STT adds
        added = [cost[v][i] - cost["plain"][i] for v in ("stt", "res_block")]
        assert added[1] == pytest.approx(added[0], rel=0.25), cost


def test_train_command_is_the_main_job_with_the_model_and_variant(tmp_path):
    config = PluginComparisonConfig(out_dir=str(tmp_path))
    command = plugin_comparison.train_command(config, "stt", "fashion_mnist", 2)
    assert command[1:4] == ["-m", "stt_hf.cli", "train"]
    model_args, data_args, training_args = parse_args(command[4:])
    assert model_args.model == "stt_convnext_s" and data_args.dataset == "fashion_mnist"
    assert json.loads(model_args.model_kwargs) == {"attn_layer": "stt"} and training_args.seed == 2
    defaults = parse_args(["--dataset", "fashion_mnist"])[2]
    for key in ("num_train_epochs", "per_device_train_batch_size", "learning_rate", "weight_decay"):
        assert getattr(training_args, key) == getattr(defaults, key), key  # the recipe itself unchanged
