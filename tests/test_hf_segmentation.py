"""Semantic segmentation: STT backbones in transformers' UperNet (both backbone routes, save/reload,
remote code, pipeline), the mean IoU / pixel accuracy metrics, and `stt-hf train-seg` / `eval-seg` end
to end on real scenes with a real Trainer and a local Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import hub_fixtures
import huggingface_hub.constants
import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from PIL import Image
from transformers import (
    AutoModelForSemanticSegmentation,
    TimmBackboneConfig,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    pipeline,
)
from transformers.modeling_outputs import SemanticSegmenterOutput

import stt_hf  # noqa: F401  (registers the STT backbone)
from stt_hf import SttConfig, cli
from stt_hf.metrics import compute_segmentation_metrics, load_metric
from stt_hf.tasks import train_seg

local_hub = hub_fixtures.local_hub

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ["stage1", "stage2", "stage3", "stage4"]
NARROW = '{"small_input": false, "channels": [8, 16, 32, 64]}'
TINY = ["--scenes_train", "48", "--scenes_validation", "16", "--scenes_test", "16",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16", "--logging_steps", "1",
        "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
        "--warmup_steps", "0", "--hidden_size", "16", "--model_kwargs", NARROW, "--disable_tqdm", "true"]
# For runs whose checkpoints and evaluations during training are not under test.
NO_CHECKPOINTS = ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module: these small convolutions gain nothing from two, and on a busy
    machine two threads wait on each other for most of a step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def scenes_cache(tmp_path_factory):
    """fashion_scenes generated into this module's own cache folder."""
    old = os.environ.get("STT_HF_SCENES_CACHE")
    os.environ["STT_HF_SCENES_CACHE"] = str(tmp_path_factory.mktemp("scenes"))
    yield
    if old is None:
        os.environ.pop("STT_HF_SCENES_CACHE")
    else:
        os.environ["STT_HF_SCENES_CACHE"] = old


def pixels(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def train_step(model, size: int = 64) -> float:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    labels = torch.randint(0, model.config.num_labels, (2, size, size),
                           generator=torch.Generator().manual_seed(2))
    loss = model(pixel_values=pixels(size=size), labels=labels).loss
    loss.backward()
    optimizer.step()
    return loss.item()


def assert_same_model(saved, loaded) -> None:
    state, reloaded = saved.state_dict(), loaded.state_dict()
    assert state.keys() == reloaded.keys()
    for key in state:
        assert torch.equal(state[key], reloaded[key]), key
    saved.eval(), loaded.eval()
    with torch.no_grad():
        x = pixels(size=32)
        # Weights equal exactly (above); the outputs of two instances to float rounding: the decode head's
        # logits differed by 5.8e-10 on an AMD EPYC at one thread (kernels may sum in another order).
        torch.testing.assert_close(saved(pixel_values=x).logits, loaded(pixel_values=x).logits, rtol=0,
                                   atol=1e-6)


# --- metrics ------------------------------------------------------------------------------------------

def test_mean_iou_and_pixel_accuracy_exact_values():
    predictions = [[[0, 1], [1, 1]]]
    references = [[[0, 1], [0, 1]]]
    iou = load_metric("mean_iou").compute(predictions=predictions, references=references, num_labels=3)
    # class 0: 1 / 2; class 1: 2 / 3; class 2 occurs nowhere: NaN, left out of the mean.
    assert iou["per_class_iou"][:2] == pytest.approx([0.5, 2 / 3])
    assert np.isnan(iou["per_class_iou"][2])
    assert iou["mean_iou"] == pytest.approx((0.5 + 2 / 3) / 2)
    accuracy = load_metric("pixel_accuracy").compute(predictions=predictions, references=references)
    assert accuracy == {"pixel_accuracy": 0.75}


def test_metrics_sum_areas_over_images_and_skip_the_ignore_index():
    predictions = [[[1, 1]], [[0, 0]]]
    references = [[[1, 255]], [[0, 1]]]  # 255 is not scored, whatever is predicted there
    iou = load_metric("mean_iou").compute(predictions=predictions, references=references, num_labels=2)
    # Summed over both maps: class 0 inter 1 union 2; class 1 inter 1 union 2 (not per-image means).
    assert iou["per_class_iou"] == pytest.approx([0.5, 0.5])
    assert load_metric("pixel_accuracy").compute(predictions=predictions, references=references)[
        "pixel_accuracy"] == pytest.approx(2 / 3)
    both = compute_segmentation_metrics(np.array(predictions), np.array(references), 2, 255, ["bg", "fg"])
    assert both == pytest.approx({"mean_iou": 0.5, "pixel_accuracy": 2 / 3, "iou_bg": 0.5, "iou_fg": 0.5})


def test_metrics_reject_labels_out_of_range_and_shape_mismatch():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        load_metric("mean_iou").compute(predictions=[[[0, 2]]], references=[[[0, 1]]], num_labels=2)
    with pytest.raises(ValueError, match="differ in shape"):
        compute_segmentation_metrics(np.zeros((1, 2, 2)), np.zeros((1, 2, 3)), 2)


# --- STT inside transformers' UperNet -----------------------------------------------------------------

def test_upernet_with_stt_backbone_config_trains_saves_and_reloads_bit_exact(tmp_path):
    backbone = SttConfig.from_timm_name("stt_resnet18", out_features=STAGES, img_size=32)
    model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone, num_labels=3,
                                                         hidden_size=16, auxiliary_channels=16))
    assert type(model.backbone).__name__ == "SttBackbone"
    before = model.decode_head.classifier.weight.clone()
    assert np.isfinite(train_step(model, size=32))
    assert not torch.equal(before, model.decode_head.classifier.weight)  # the step changed the weights
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path)
    assert type(loaded) is UperNetForSemanticSegmentation
    assert loaded.config.backbone_config.model_type == "stt"
    assert_same_model(model, loaded)


def test_timm_route_through_a_timm_backbone_config(tmp_path):
    """The timm name route that works offline: a TimmBackboneConfig, which transformers takes as is."""
    backbone = TimmBackboneConfig(backbone="stt_resnet18", out_indices=[1, 2, 3, 4])
    config = UperNetConfig(backbone_config=backbone, num_labels=3, hidden_size=16, auxiliary_channels=16)
    model = UperNetForSemanticSegmentation(config)
    assert type(model.backbone).__name__ == "TimmBackbone"
    assert any(type(m).__name__ == "STT" for m in model.backbone.modules())  # timm built stt_resnet18
    assert model(pixel_values=pixels(size=32)).logits.shape == (2, 3, 32, 32)
    train_step(model, size=32)
    model.save_pretrained(tmp_path)
    assert_same_model(model, AutoModelForSemanticSegmentation.from_pretrained(tmp_path))


def test_timm_route_by_name_asks_the_hub_first(monkeypatch):
    """`backbone="stt_resnet18"` makes transformers look the name up as a Hub model repo before falling
    back to timm, so offline it cannot work (hence the TimmBackboneConfig route above)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(huggingface_hub.errors.OfflineModeIsEnabled, match="stt_resnet18"):
        UperNetConfig(backbone="stt_resnet18", use_timm_backbone=True, use_pretrained_backbone=False)


# --- a trained segmenter: outputs, pipeline, remote code, eval-seg, resume ----------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "scenes"
    argv = [*TINY, "--output_dir", str(out), "--max_steps", "4"]
    trainer, results = train_seg.run(argv)
    return out, trainer, results


def test_train_seg_writes_every_output(trained):
    out, trainer, results = trained
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "metrics.json",
                 "training_curves.png", "predictions_overlay.png", "modeling_stt_seg.py", "modeling_stt.py",
                 "configuration_stt.py"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and metrics["eval_split"] == "test"
    assert metrics["labels"][0] == "background" and len(metrics["labels"]) == 11
    miou = metrics["metrics"]["mean_iou"]
    assert 0 <= miou <= 1 and miou == pytest.approx(results["eval"]["test_mean_iou"])
    meta = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    index = meta["model-index"][0]["results"][0]
    assert index["task"]["type"] == "image-segmentation" and meta["pipeline_tag"] == "image-segmentation"
    values = {m["name"]: m["value"] for m in index["metrics"]}
    assert values == pytest.approx({"mean_iou": round(miou, 4),
                                    "pixel_accuracy": round(metrics["metrics"]["pixel_accuracy"], 4)})
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "upernet" and config["backbone_config"]["model_type"] == "stt"
    assert config["auto_map"]["AutoModelForSemanticSegmentation"].startswith("modeling_stt_seg.")
    width, height = Image.open(out / "predictions_overlay.png").size
    assert height > width > 100  # one row of three panels per image
    assert any("eval_mean_iou" in h for h in trainer.state.log_history)


def test_pipeline_returns_one_mask_per_predicted_class(trained):
    out, trainer, _ = trained
    segmenter = pipeline("image-segmentation", model=str(out))
    scene = Image.open(out / "predictions_overlay.png").convert("L").crop((0, 0, 80, 60))  # any picture
    segments = segmenter(scene)
    labels = json.loads((out / "config.json").read_text())["id2label"]
    assert segments and {s["label"] for s in segments} <= set(labels.values())
    model = AutoModelForSemanticSegmentation.from_pretrained(out).eval()
    inputs = segmenter.image_processor(scene.convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = segmenter.image_processor.post_process_semantic_segmentation(
        SemanticSegmenterOutput(logits=logits), target_sizes=[scene.size[::-1]])[0]
    covered = np.zeros(scene.size[::-1], dtype=int)
    for segment in segments:
        mask = np.asarray(segment["mask"]) > 0
        assert segment["mask"].size == scene.size
        class_id = int(model.config.label2id[segment["label"]])
        assert np.array_equal(mask, expected.numpy() == class_id)
        covered += mask
    assert (covered == 1).all()  # the class masks tile the picture


REMOTE_SCRIPT = textwrap.dedent("""
    import sys

    class HideSttHf:  # however stt_hf is installed, this interpreter cannot import it
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "stt_hf":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, HideSttHf())
    try:
        import stt_hf
    except ModuleNotFoundError:
        pass
    else:
        sys.exit(f"stt_hf is importable from {stt_hf.__file__}: the test would prove nothing")
    import safetensors.torch, torch
    from PIL import Image
    from transformers import AutoModelForSemanticSegmentation, pipeline
    ckpt, expected_file, threads = sys.argv[1:4]
    torch.set_num_threads(int(threads))  # as the parent's: convolutions sum in another order otherwise
    expected = safetensors.torch.load_file(expected_file)
    model = AutoModelForSemanticSegmentation.from_pretrained(ckpt, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    assert type(model.backbone).__name__ == "SttBackbone"
    state = model.state_dict()
    for key, value in safetensors.torch.load_file(f"{ckpt}/model.safetensors").items():
        assert torch.equal(state[key], value), key  # the weights exactly; the outputs to float rounding:
    torch.testing.assert_close(model(expected["pixels"]).logits, expected["logits"], rtol=0, atol=1e-6)
    segments = pipeline("image-segmentation", model=ckpt, trust_remote_code=True)(Image.new("RGB", (64, 64)))
    assert segments and all(s["mask"].size == (64, 64) for s in segments)
    assert "stt_hf" not in sys.modules
    print("REMOTE-OK")
""")


def test_saved_segmenter_loads_without_stt_hf(trained, tmp_path):
    """A fresh interpreter that cannot import stt_hf loads the folder with trust_remote_code=True (the
    pattern of test_hf_modeling: -S, plain site-packages on PYTHONPATH, an import hook refusing stt_hf)."""
    out, _, _ = trained
    model = AutoModelForSemanticSegmentation.from_pretrained(out).eval()
    with torch.no_grad():
        expected = {"pixels": pixels(), "logits": model(pixel_values=pixels()).logits}
    safetensors.torch.save_file(expected, tmp_path / "expected.safetensors")
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"], "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-S", "-c", REMOTE_SCRIPT, str(out),
                          str(tmp_path / "expected.safetensors"), str(torch.get_num_threads())],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "REMOTE-OK" in run.stdout, run.stdout + run.stderr


def test_eval_seg_scores_the_saved_model_like_the_trainer(trained, tmp_path):
    out, _, results = trained
    report = tmp_path / "eval.json"
    code = cli.main(["eval-seg", "--model", str(out), "--scenes_test", "16", "--scenes_validation", "16",
                     "--output", str(report)])
    assert code == 0
    result = json.loads(report.read_text())
    assert result["split"] == "test" and result["samples"] == 16
    assert result["metrics"]["mean_iou"] == pytest.approx(results["eval"]["test_mean_iou"], abs=1e-6)
    assert result["metrics"]["pixel_accuracy"] == pytest.approx(results["eval"]["test_pixel_accuracy"],
                                                                abs=1e-6)
    overlay = Image.open(result["overlay"])
    assert overlay.size[0] > 100 and result["overlay"].endswith("eval_overlay.png")


def test_resume_latest_continues_from_the_last_checkpoint(trained, tmp_path):
    out, _, _ = trained
    run_dir = tmp_path / "resumed"
    train_seg.run([*TINY, "--output_dir", str(run_dir), "--max_steps", "2"])
    trainer, results = train_seg.run([*TINY, "--output_dir", str(run_dir), "--max_steps", "4",
                                      "--resume_from_checkpoint", "latest"])
    assert results["global_step"] == 4
    logged = [h["step"] for h in trainer.state.log_history if "loss" in h]
    assert logged == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint's state, 3-4 were trained now
    assert (run_dir / "checkpoint-4").is_dir()


def test_config_file_supplies_defaults_that_flags_override(tmp_path):
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump({"hidden_size": 24, "learning_rate": 0.01, "scenes_train": 32}))
    model_args, data_args, training_args = train_seg.parse_args(["--config", str(config),
                                                                 "--hidden_size", "8"])
    assert model_args.hidden_size == 8 and training_args.learning_rate == 0.01
    assert data_args.scenes_train == 32
    assert training_args.metric_for_best_model == "mean_iou"
    assert training_args.output_dir.endswith("segmenter-stt_resnet10_s-fashion_scenes")


# --- other sources and bad masks ------------------------------------------------------------------------

def write_pairs(root, count: int, size: int = 32, bad: dict | None = None):
    """`count` image + mask pairs under root/images and root/masks: a bright square labelled 1 or 2."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = np.zeros((size, size), np.uint8)
        mask = np.zeros((size, size), np.uint8)
        x, y = rng.integers(0, size // 2, 2)
        image[y:y + size // 3, x:x + size // 3] = 200 if i % 2 else 100
        mask[y:y + size // 3, x:x + size // 3] = 1 + i % 2
        Image.fromarray(image).save(root / "images" / f"p{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
    for name, mask in (bad or {}).items():
        mask.save(root / "masks" / f"{name}.png")


def test_train_seg_on_a_folder_of_image_mask_pairs(tmp_path):
    data = tmp_path / "pairs"
    write_pairs(data, 20)
    (data / "classes.txt").write_text("background\nsquare\nbright square\n")
    out = tmp_path / "out"
    # 15 training pairs in batches of 7: a last batch of one, which UperNet cannot train on, is dropped.
    _, results = train_seg.run([*TINY, *NO_CHECKPOINTS, "--dataset", str(data), "--img_size", "32",
                                "--per_device_train_batch_size", "7", "--num_train_epochs", "1",
                                "--max_steps", "-1",
                                "--output_dir", str(out), "--val_fraction", "0.25"])
    assert results["labels"] == ["background", "square", "bright square"]
    assert results["eval_split"] == "validation" and results["global_step"] == 2  # 7 + 7, not + 1
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "background", "1": "square", "2": "bright square"}
    assert config["backbone_config"]["img_size"] == 32


def test_train_seg_reads_a_saved_dataset_with_other_column_names(tmp_path):
    import datasets

    from stt_hf.data.scenes import load_fashion_scenes

    scenes = load_fashion_scenes(train_size=24, validation_size=8, test_size=8, progress=False)
    renamed = datasets.DatasetDict({split: ds.rename_columns({"image": "picture", "mask": "segmentation"})
                                    for split, ds in scenes.items()})
    renamed.save_to_disk(str(tmp_path / "saved"))
    _, results = train_seg.run([*TINY, *NO_CHECKPOINTS, "--dataset", str(tmp_path / "saved"),
                                "--image_column", "picture",
                                "--mask_column", "segmentation", "--max_steps", "1",
                                "--output_dir", str(tmp_path / "out")])
    largest = max(int(np.asarray(mask).max()) for ds in scenes.values() for mask in ds["mask"])
    assert results["eval_split"] == "test"
    assert results["labels"] == [f"class_{i}" for i in range(largest + 1)]  # no names: up to the largest


def test_fine_tune_a_saved_segmenter_on_other_classes(trained, tmp_path):
    out, _, _ = trained
    data = tmp_path / "pairs"
    write_pairs(data, 20)
    _, results = train_seg.run([*TINY, *NO_CHECKPOINTS, "--model", str(out), "--dataset", str(data),
                                "--class_names", "bg,dim,bright", "--learning_rate", "0", "--max_steps", "1",
                                "--output_dir", str(tmp_path / "tuned")])
    assert results["labels"] == ["bg", "dim", "bright"]
    base = safetensors.torch.load_file(out / "model.safetensors")
    tuned = safetensors.torch.load_file(tmp_path / "tuned" / "model.safetensors")
    assert tuned["decode_head.classifier.weight"].shape[0] == 3
    assert base["decode_head.classifier.weight"].shape[0] == 11
    trunk = [k for k in base if k.startswith("backbone.") and k.endswith(".weight")]
    assert trunk and all(torch.equal(base[k], tuned[k]) for k in trunk)  # learning rate 0: the checkpoint's
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["backbone_config"]["img_size"] == 64


def test_a_hub_dataset_id_is_read_with_datasets_and_its_columns(tmp_path, monkeypatch):
    """An ORG/NAME id goes to datasets.load_dataset (stood in for here: the tests have no dataset Hub);
    the named columns are used, and a missing validation split is carved from train."""
    import datasets

    from stt_hf.data.scenes import load_fashion_scenes

    scenes = load_fashion_scenes(train_size=24, validation_size=8, test_size=8, progress=False)
    columns = {"image": "pixels", "mask": "label"}
    hub = datasets.DatasetDict({split: scenes[split].rename_columns(columns) for split in ("train", "test")})
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name: asked.append(name) or hub)
    _, results = train_seg.run([*TINY, *NO_CHECKPOINTS, "--dataset", "org/scenes", "--image_column",
                                "pixels", "--mask_column", "label",
                                "--class_names", ",".join(f"c{i}" for i in range(11)),
                                "--max_steps", "1", "--output_dir", str(tmp_path / "out")])
    assert asked == ["org/scenes"] and results["eval_split"] == "test"
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["labels"][10] == "c10"
    with pytest.raises(ValueError, match="no column 'picture'"):
        train_seg.run([*TINY, "--dataset", "org/scenes", "--image_column", "picture",
                       "--output_dir", str(tmp_path / "bad")])


@pytest.mark.parametrize("problem", ["size", "range", "mode"])
def test_bad_masks_are_rejected_before_training(tmp_path, problem, capsys):
    data = tmp_path / "pairs"
    bad = {"size": Image.new("L", (16, 32)), "range": Image.new("L", (32, 32), 7),
           "mode": Image.new("RGB", (32, 32))}[problem]
    write_pairs(data, 6, bad={"p3": bad})
    out = tmp_path / "out"
    argv = ["train-seg", *TINY, "--dataset", str(data), "--class_names", "bg,a,b", "--img_size", "32",
            "--max_steps", "2", "--output_dir", str(out)]
    assert cli.main(argv) == 2
    message = capsys.readouterr().err
    expected = {"size": "mask is 16x32 but its image is 32x32", "range": "mask labels [7] are outside 0..2",
                "mode": "mask is mode RGB"}[problem]
    assert "bad masks (nothing was trained)" in message and expected in message and "row" in message
    assert not out.exists()  # nothing trained, nothing written


# --- publishing ---------------------------------------------------------------------------------------

def test_push_to_hub_publishes_the_finished_folder(tmp_path, local_hub):
    out = tmp_path / "pushed"
    env = {**os.environ, **local_hub.env, "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "stt_hf.cli", "train-seg", *TINY, *NO_CHECKPOINTS,
                           "--max_steps", "1",
                           "--output_dir", str(out), "--push_to_hub", "--hub_model_id", "stt/scenes-seg"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = local_hub.files("stt/scenes-seg")
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md",
                 "modeling_stt_seg.py", "predictions_overlay.png", "metrics.json"):
        assert files[name] == (out / name).read_bytes(), name
    assert not any(name.startswith("checkpoint-") for name in files)


def test_eval_outputs_written_into_a_model_folder_are_not_pushed(tmp_path, local_hub):
    """stt-hf eval/eval-seg write their JSON and overlay into the model folder; a push leaves them out."""
    folder = tmp_path / "segmenter"
    (folder / "checkpoint-2").mkdir(parents=True)
    published = {"model.safetensors": b"weights", "config.json": b"{}", "README.md": b"# card",
                 "predictions_overlay.png": b"png"}
    local = {"eval_seg_test.json": b"{}", "eval_seg_test_overlay.png": b"png", "eval_test.json": b"{}",
             "checkpoint-2/trainer_state.json": b"{}"}
    for name, data in {**published, **local}.items():
        (folder / name).write_bytes(data)
    local_hub.run_python("import sys; from stt_hf.reporting.publish import push_folder; "
                         "push_folder(sys.argv[1], 'stt/eval-outputs')", str(folder))
    assert set(local_hub.files("stt/eval-outputs")) - {".gitattributes"} == set(published)


# --- the guide ----------------------------------------------------------------------------------------

def test_readme_segmentation_code_runs(tmp_path, monkeypatch):
    """The Python blocks of docs/segmentation.md before its training section, in order in one namespace."""
    readme = (REPO_ROOT / "docs" / "segmentation.md").read_text()
    section = readme[readme.index("# Segmentation"):readme.index("## Training: `stt-hf train-seg`")]
    blocks = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/segmentation.md", "exec"), namespace)
    assert type(namespace["model"].backbone).__name__ == "TimmBackbone"
    assert type(namespace["reloaded"].backbone).__name__ == "SttBackbone"
    assert (tmp_path / "segmenter" / "modeling_stt_seg.py").is_file()
    assert namespace["segment"]["mask"].size == (80, 60)
