"""The captioning comparison: tiny real `stt-hf train-caption` runs on fashion_scenes, resuming, report."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from test_tasks_train_caption import TINY

from stt_hf.experiments import caption_comparison
from stt_hf.experiments.caption_comparison import ENCODERS, METRICS, CaptionComparisonConfig
from stt_hf.hf.configuration_stt import SttVisionConfig
from stt_hf.hf.modeling_stt import SttVisionEncoder

# TINY's model on 16 train / 8 validation / 8 test scenes, one epoch (the comparison sets the dataset).
_DATASET = TINY.index("--dataset") if "--dataset" in TINY else len(TINY)
SCENES = [*TINY[:_DATASET], *TINY[_DATASET + 2:], "--max_train_samples", "16", "--num_train_epochs", "1"]


def test_every_encoder_builds_with_the_recipe_options():
    """Each encoder's options, on top of train-caption's default encoder_kwargs, build and run at the
    recipe's 64 px (the tiny runs below use 32 px)."""
    img_size = 64
    blocks = {}
    for name in ENCODERS:
        options = caption_comparison.encoder_kwargs([], name)
        assert options["channels"] == [16, 32, 64, 128]  # train-caption's default stays
        if options["attn_layer"] == "stt":  # STT's rows mean the same whatever train-caption's default modes
            assert options["stt_modes"] == ("hw" if name == "stt_hw" else "chw"), name
        config = SttVisionConfig.from_timm_name("stt_resnet10_s", img_size=img_size, hidden_size=32,
                                                **options)
        encoder = SttVisionEncoder(config).eval()
        tokens = encoder(pixel_values=torch.zeros(1, 3, img_size, img_size)).last_hidden_state
        assert tokens.shape[-1] == 32, name
        blocks[name] = {n: type(m).__name__ for n, m in encoder.resnet.named_modules()
                        if n in encoder.resnet.attn_names}
    assert blocks["plain"] == {}
    # Every module sits where the default STT block sits.
    places = {name: sorted(b) for name, b in blocks.items() if name != "plain"}
    assert len({tuple(p) for p in places.values()}) == 1 and places["stt"], places
    types = {name: tuple(b.values()) for name, b in blocks.items() if name not in ("plain", "stt_hw")}
    assert len(set(types.values())) == len(types) == 4, types  # stt, self_attn, axial, flat_dense
    modes = SttVisionEncoder(SttVisionConfig.from_timm_name(
        "stt_resnet10_s", img_size=img_size, **caption_comparison.encoder_kwargs([], "stt_hw")))
    assert "modes=hw," in repr(modes.resnet)


def test_given_encoder_kwargs_are_kept_under_the_encoder_options():
    args = ["--encoder_kwargs", '{"channels": [8, 16, 32, 64], "attn_layer": "se"}']
    expected = dict(channels=[8, 16, 32, 64], attn_layer="none")
    assert caption_comparison.encoder_kwargs(args, "plain") == expected
    command = caption_comparison.train_command(CaptionComparisonConfig(train_args=args), "stt_hw", 2)
    assert command.count("--encoder_kwargs") == 1
    assert json.loads(command[command.index("--encoder_kwargs") + 1]) == dict(
        channels=[8, 16, 32, 64], attn_layer="stt", stt_modes="hw")
    assert command[command.index("--seed") + 1] == "2"
    assert command[command.index("--dataset") + 1] == "fashion_scenes"


def test_run_appends_resumes_and_reports(tmp_path):
    out = tmp_path / "cmp"
    config = CaptionComparisonConfig(out_dir=str(out), encoders=["stt", "plain"], seeds=[0],
                                     train_args=SCENES)
    runs = caption_comparison.run(config)
    assert [(r["encoder"], r["seed"], r["dataset"]) for r in runs] == [("stt", 0, "fashion_scenes"),
                                                                         ("plain", 0, "fashion_scenes")]
    for row in runs:
        assert set(METRICS) <= set(row)  # the scene metrics included
        assert all(0 <= row[m] and (m == "cider" or row[m] <= 1.5) for m in METRICS), row
        assert 0 < row["encoder_params"] < row["params"] and row["train_s"] > 0 and row["wall_s"] > 0
        assert len(row["examples"]) == 8 and {"reference", "generated"} == set(row["examples"][0])
        run_dir = out / "runs" / caption_comparison.run_name(row["encoder"], 0)
        assert (run_dir / "model.safetensors").is_file() and not list(run_dir.glob("checkpoint-*"))
        assert (out / "logs" / f"{row['encoder']}-seed0.log").stat().st_size > 0
    assert runs[0]["encoder_params"] > runs[1]["encoder_params"]  # STT adds its block
    # Only the attention options differ between the runs' saved encoders.
    stt, plain = (json.loads((out / "runs" / f"{e}-seed0" / "config.json").read_text())["encoder"]
                  for e in ("stt", "plain"))
    assert stt["attn_layer"] == "stt" and plain["attn_layer"] in (None, "none")
    assert stt["channels"] == plain["channels"] == [16, 32, 64, 128]
    differ = {k for k in stt.keys() | plain.keys() if stt.get(k) != plain.get(k)}
    assert differ and all(k.startswith(("attn", "stt")) for k in differ), differ

    # Resuming: nothing left to do, runs.jsonl unchanged.
    before = (out / "runs.jsonl").read_text()
    assert caption_comparison.run(config) == runs
    assert (out / "runs.jsonl").read_text() == before

    result = caption_comparison.report(out)
    text = (out / "results.md").read_text()
    assert result["runs"] == 2 and "| stt | 1 | " in text and "| plain | 1 | " in text
    assert "object_f1" in text and "cider" in text and " ± –" in text  # one seed: no spread to show
    assert ("fashion_scenes (1 seed(s)), by test object_f1: stt is not yet comparable with plain" in text
            and "no self_attn runs yet" in text)
    assert (out / "summary.csv").read_text().startswith("dataset,encoder,seeds,")
    assert "examples" not in (out / "runs.csv").read_text().splitlines()[0]
    with Image.open(out / "examples.png") as grid:
        assert grid.width > 600 and grid.height > 300
    images, captions = caption_comparison.load_test_images(runs[0]["data_args"], 0)
    assert captions == [e["reference"] for e in runs[0]["examples"]] and len(images) == 8

    # The command line: --report_only rebuilds from runs.jsonl without training.
    assert caption_comparison.main(["--out_dir", str(out), "--report_only"]) == 0

    # Rescoring: the saved captioners decoded again without the n-gram limit, resumable, reported apart.
    rescored = caption_comparison.rescore(config, 0)
    assert [(r["encoder"], r["seed"], r["no_repeat_ngram_size"]) for r in rescored] == [("stt", 0, 0),
                                                                                         ("plain", 0, 0)]
    for row, again in zip(runs, rescored, strict=True):
        assert set(METRICS) <= set(again) and again["params"] == row["params"]
        run_dir = out / "runs" / f"{row['encoder']}-seed0"
        evaluated = json.loads((run_dir / "eval_test_ngram0.json").read_text())
        assert evaluated["decoding"]["no_repeat_ngram_size"] == 0 and evaluated["samples"] == 8
        assert evaluated["metrics"]["object_f1"] == again["object_f1"]
        assert [e["reference"] for e in evaluated["examples"]] == [e["reference"] for e in row["examples"]]
    before = (out / "rescored.jsonl").read_text()
    assert caption_comparison.main(["--out_dir", str(out), "--encoders", "stt", "plain", "--seeds", "0",
                                    "--rescore", "0"]) == 0
    assert (out / "rescored.jsonl").read_text() == before
    text = (out / "results.md").read_text()
    assert text.count("| stt | 1 | ") == 2 and "decoded with no_repeat_ngram_size=0 (`--rescore 0`)" in text
    assert (out / "summary_ngram0.csv").read_text().startswith("dataset,encoder,seeds,")


def test_verdict_reads_the_seed_spread():
    def row(encoder, f1, std, seeds=3):
        return dict(dataset="d", encoder=encoder, seeds=seeds, object_f1=f1, object_f1_std=std, cider=0.0,
                    cider_std=0.0)

    summary = [row("stt", 0.80, 0.01), row("plain", 0.70, 0.02), row("self_attn", 0.79, 0.02)]
    text = caption_comparison.verdict(summary, "d")
    assert text.startswith("d (3 seed(s)), by test object_f1: stt is ahead of plain (+0.1000")
    assert "within the seed spread of self_attn" in text
    assert "behind stt" in caption_comparison.verdict(summary, "d", "plain", ("stt",))
    two = [row("stt", 0.80, 0.0, seeds=1), row("plain", 0.70, 0.0)]
    assert "not yet comparable with plain" in caption_comparison.verdict(two, "d")
    no_scenes = [{k: v for k, v in r.items() if not k.startswith("object")} for r in summary]
    assert "by test cider" in caption_comparison.verdict(no_scenes, "d")


def test_summary_has_welch_p_values_against_stt():
    from scipy.stats import ttest_ind

    def run(encoder, seed, f1):
        scores = dict.fromkeys(METRICS, 0.5) | {"object_f1": f1}
        return dict(encoder=encoder, seed=seed, dataset="d", **scores, encoder_params=1e5, params=1e6,
                    train_s=60)

    f1s = {"stt": [0.80, 0.81, 0.83], "plain": [0.70, 0.72, 0.71], "self_attn": [0.80]}
    runs = [run(e, s, f1) for e, values in f1s.items() for s, f1 in enumerate(values)]
    summary = {r["encoder"]: r for r in caption_comparison.summarize_runs(runs)}
    expected = ttest_ind(f1s["plain"], f1s["stt"], equal_var=False).pvalue
    assert summary["plain"]["p_vs_stt"] == pytest.approx(expected) and expected < 0.01
    assert summary["stt"]["p_vs_stt"] is None and summary["self_attn"]["p_vs_stt"] is None  # one seed
    text = caption_comparison.markdown(list(summary.values()))
    assert "| p vs stt (object_f1) |" in text and f" | {expected:.3f} | " in text
    assert text.splitlines()[-1].startswith("| self_attn | 1 | ") and " | - | " in text.splitlines()[-1]


def test_unknown_encoder_and_own_flags_fail_clearly(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown encoders \['cbam'\]; known: \['stt', 'plain'"):
        caption_comparison.main(["--out_dir", str(tmp_path), "--encoders", "stt", "cbam"])
    with pytest.raises(ValueError, match="--seeds"):
        caption_comparison.run(CaptionComparisonConfig(out_dir=str(tmp_path), train_args=["--seed", "3"]))
    assert not (tmp_path / "runs.jsonl").exists()
    with pytest.raises(SystemExit):
        caption_comparison.main(["--out_dir", str(tmp_path), "--rescore", "-1"])
    error = capsys.readouterr().err
    assert "--rescore must be 0 (no n-gram limit) or a positive n-gram size, got -1" in error
    row = dict(encoder="stt", seed=0, dataset="fashion_scenes")
    with pytest.raises(FileNotFoundError, match="stt-seed0 holds no saved captioner"):
        caption_comparison.rescore_one(CaptionComparisonConfig(out_dir=str(tmp_path)), row, 0)
