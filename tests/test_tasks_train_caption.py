"""`stt-hf train-caption` / `eval-caption` on real Tux Paint stamps: a tiny but complete run."""

from __future__ import annotations

import json
import textwrap

import hub_fixtures
import pytest
import yaml
from PIL import Image
from test_tasks_train import run_cli

from stt_hf.tasks import train_caption

local_hub = hub_fixtures.local_hub

# Real data, tiny model: 32 stamps, 32 px, narrow encoder, one decoder layer, greedy decoding.
TINY = ["--dataset", "tuxpaint", "--max_train_samples", "32", "--max_eval_samples", "8", "--img_size", "32",
        "--encoder_kwargs", '{"channels": [16, 32, 64, 128]}', "--hidden_size", "64",
        "--decoder_layers", "1", "--decoder_heads", "2", "--vocab_size", "300",
        "--max_caption_length", "12", "--per_device_train_batch_size", "16", "--num_train_epochs", "2",
        "--generation_num_beams", "1", "--logging_steps", "1", "--warmup_steps", "0",
        "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("caption") / "tux"
    results = train_caption.main([*TINY, "--output_dir", str(out)])
    return out, results


def test_train_caption_writes_a_complete_captioner(caption_run):
    out, results = caption_run
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "preprocessor_config.json", "README.md", "metrics.json", "training_curves.png",
                 "modeling_stt.py"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider",
                                       "distinct_ratio"}
    assert len(metrics["examples"]) == 8 and all(isinstance(e["generated"], str) for e in metrics["examples"])
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["max_length"] == 12 and generation["num_beams"] == 1

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] == "image-to-text"
    scores = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert scores["cider"] == round(metrics["metrics"]["cider"], 4)
    assert "12 tokens including the end token" in card  # the caption length limit
    assert "stt-hf train-caption" in card
    assert "| generation | greedy, at most 12 tokens, no repeated 3-grams |" in card  # the default off scenes
    assert "| train crop scale | 0.8 |" in card
    assert ("channels [16, 32, 64, 128], attention `stt` over modes `chw`, `dense` synthesizer (final "
            "placement, stage(s) 4)") in card  # the encoder_kwargs given replace the default (modes hw)


def test_eval_caption_scores_the_saved_captioner_the_same_way(caption_run, tmp_path):
    out, results = caption_run
    report = tmp_path / "eval.json"
    run_cli(["eval-caption", "--model", str(out), "--dataset", "tuxpaint", "--max_eval_samples", "8",
             "--output", str(report)])
    evaluated = json.loads(report.read_text())
    trained = json.loads((out / "metrics.json").read_text())
    # Same test images, same greedy decoding: the same captions as at the end of training.
    assert [e["generated"] for e in evaluated["examples"]] == [e["generated"] for e in trained["examples"]]
    assert evaluated["samples"] == 8 and set(evaluated["metrics"]) == set(trained["metrics"])
    assert evaluated["decoding"] == {"num_beams": 1, "no_repeat_ngram_size": 3}  # the saved generation config
    # Without the n-gram limit the decoding may differ, and the report is written all the same.
    unlimited = tmp_path / "unlimited.json"
    run_cli(["eval-caption", "--model", str(out), "--dataset", "tuxpaint", "--max_eval_samples", "8",
             "--no_repeat_ngram_size", "0", "--output", str(unlimited)])
    unlimited = json.loads(unlimited.read_text())
    assert unlimited["samples"] == 8 and unlimited["decoding"]["no_repeat_ngram_size"] == 0


def test_pipeline_loads_the_trained_captioner(caption_run):
    from stt_hf import caption_pipeline

    out, results = caption_run
    captioner = caption_pipeline(str(out))
    image = Image.new("CMYK", (50, 70), (0, 200, 200, 0))
    assert isinstance(captioner(image)[0]["generated_text"], str)


def test_empty_captions_fail_before_training(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = ["file_name,caption"]
    for i in range(12):
        Image.new("RGBA" if i % 2 else "L", (20, 20), 120).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{'' if i in (3, 7) else f'a grey square number {i}'}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    proc = run_cli(["train-caption", *TINY, "--dataset", str(folder), "--output_dir", str(out)], check=False)
    assert proc.returncode != 0
    assert "caption" in proc.stderr and "row" in proc.stderr
    assert not (out / "model.safetensors").exists()


def test_push_captioner_then_load_from_the_hub(caption_run, local_hub):
    out, _ = caption_run
    run_cli(["push", str(out), "--repo_id", "stt/tux-captioner"], env=local_hub.env)
    files = local_hub.files("stt/tux-captioner")
    for name in ("model.safetensors", "generation_config.json", "tokenizer.json", "README.md"):
        assert name in files, name
    local_hub.run_python(textwrap.dedent("""
        import torch
        import stt_hf
        from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel
        model = VisionEncoderDecoderModel.from_pretrained("stt/tux-captioner").eval()
        tokenizer = AutoTokenizer.from_pretrained("stt/tux-captioner")
        AutoImageProcessor.from_pretrained("stt/tux-captioner")
        ids = model.generate(torch.randn(1, 3, 32, 32))
        assert isinstance(tokenizer.decode(ids[0], skip_special_tokens=True), str)
    """))


def test_train_caption_on_scenes_reports_the_scene_metrics_against_every_reference(tmp_path):
    """On fashion_scenes the report scores all phrasings of a scene and adds object F1 / relations."""
    out = tmp_path / "scenes"
    results = train_caption.main([*TINY, "--dataset", "fashion_scenes", "--max_train_samples", "16",
                                  "--num_train_epochs", "1", "--output_dir", str(out)])
    scores = results["eval"]
    for name in ("bleu_4", "cider", "meteor", "distinct_ratio", "object_f1", "relation_accuracy"):
        assert 0 <= scores[f"test_{name}"] and (name == "cider" or scores[f"test_{name}"] <= 1.5), name
    # Scored against every phrasing of each scene, not only the `caption` column's first one.
    from stt_hf.data.captions import load_caption_dataset
    from stt_hf.metrics import compute_caption_metrics

    test = load_caption_dataset("fashion_scenes", limits={"train": 16, "validation": 8, "test": 8})["test"]
    assert max(len(refs) for refs in test["captions"]) > 1
    generated = [e["generated"] for e in results["examples"]]
    expected = compute_caption_metrics(generated, list(test["captions"]), list(test["objects"]))
    assert {k: scores[f"test_{k}"] for k in expected} == pytest.approx(expected)
    card = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"object_f1", "relation_accuracy", "distinct_ratio"} <= set(card)
    # Scene captions may repeat a phrase ("a t-shirt left of a t-shirt"): no n-gram limit by default.
    from transformers import GenerationConfig

    assert GenerationConfig.from_pretrained(out).no_repeat_ngram_size in (None, 0)
    assert "no repeated" not in (out / "README.md").read_text()


def test_default_encoder_is_the_comparisons_stt_hw():
    """The default encoder is the one the captioning comparison calls `stt_hw` (docs/results.md)."""
    from stt_hf.experiments.caption_comparison import encoder_kwargs
    from stt_hf.hf.configuration_stt import SttVisionConfig

    model_args, _, _ = train_caption.parse_args([])
    default = json.loads(model_args.encoder_kwargs)
    config = SttVisionConfig.from_timm_name(model_args.encoder, img_size=model_args.img_size, **default)
    assert config.attn_layer == "stt" and config.stt_modes == "hw"
    assert {"attn_layer": "stt", **default} == encoder_kwargs([], "stt_hw")
