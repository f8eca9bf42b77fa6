"""Model cards: a README.md with model-index metadata holding the measured results."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

METRIC_TYPES = {"accuracy": "accuracy", "top5_accuracy": "top-5-accuracy", "macro_f1": "f1"}


def render_model_card(
    *,
    model_id: str,
    dataset_name: str,
    dataset_id: str,
    metrics: dict[str, float],
    eval_split: str,
    context: dict,
    template: str | Path | None = None,
) -> ModelCard:
    """Fill the card template; `metrics` become model-index results, `context` the body fields."""
    eval_results = [
        EvalResult(task_type="image-classification", dataset_type=dataset_id, dataset_name=dataset_name,
                   dataset_split=eval_split, metric_type=METRIC_TYPES.get(name, name), metric_name=name,
                   metric_value=round(float(value), 4))
        for name, value in metrics.items()
    ]
    card_data = ModelCardData(
        library_name="transformers", license="apache-2.0", pipeline_tag="image-classification",
        tags=["stt", "timm", "image-classification", "attention"], datasets=[dataset_id],
        metrics=sorted({r.metric_type for r in eval_results}), model_name=model_id,
        eval_results=eval_results,
    )
    text = (Path(template).read_text() if template
            else resources.files("stt_hf").joinpath("templates/model_card.md").read_text())
    body = jinja2.Template(text, undefined=jinja2.StrictUndefined).render(
        card_data=card_data.to_yaml(), model_id=model_id, dataset_name=dataset_name, eval_split=eval_split,
        metrics={k: f"{v:.4f}" for k, v in metrics.items()}, **context,
    )
    return ModelCard(body)
