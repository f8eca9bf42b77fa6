"""Model cards: a README.md with model-index metadata holding the measured results."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

METRIC_TYPES = {"accuracy": "accuracy", "top5_accuracy": "top-5-accuracy", "macro_f1": "f1",
                "bleu_1": "bleu", "bleu_2": "bleu", "bleu_3": "bleu", "bleu_4": "bleu", "meteor": "meteor",
                "rouge_l": "rouge", "cider": "cider"}
CARD_TEMPLATES = {"image-classification": "model_card.md", "image-to-text": "caption_model_card.md"}


def render_model_card(
    *,
    model_id: str,
    dataset_name: str,
    dataset_id: str,
    metrics: dict[str, float],
    eval_split: str,
    context: dict,
    template: str | Path | None = None,
    task: str = "image-classification",
) -> ModelCard:
    """Fill the card template; `metrics` become model-index results, `context` the body fields.

    task: "image-classification" (template model_card.md) or "image-to-text" (caption_model_card.md).
    """
    eval_results = [
        EvalResult(task_type=task, dataset_type=dataset_id, dataset_name=dataset_name,
                   dataset_split=eval_split, metric_type=METRIC_TYPES.get(name, name), metric_name=name,
                   metric_value=round(float(value), 4))
        for name, value in metrics.items()
    ]
    card_data = ModelCardData(
        library_name="transformers", license="apache-2.0", pipeline_tag=task,
        tags=["stt", "timm", task, "attention"], datasets=[dataset_id],
        metrics=sorted({r.metric_type for r in eval_results}), model_name=model_id,
        eval_results=eval_results,
    )
    text = (Path(template).read_text() if template
            else resources.files("stt_hf").joinpath(f"templates/{CARD_TEMPLATES[task]}").read_text())
    body = jinja2.Template(text, undefined=jinja2.StrictUndefined).render(
        card_data=card_data.to_yaml(), model_id=model_id, dataset_name=dataset_name, eval_split=eval_split,
        metrics={k: f"{v:.4f}" for k, v in metrics.items()}, **context,
    )
    return ModelCard(body)
