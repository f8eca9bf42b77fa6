"""What `import stt_hf` registers, in one place.

- timm: the `stt_*` model entry points (importing `stt_hf.models` runs their `@register_model`);
- transformers: `SttConfig` ("stt") with AutoConfig, AutoModel, AutoModelForImageClassification and
  AutoBackbone, and `SttVisionConfig` ("stt_vision") with AutoConfig and AutoModel, which is how
  VisionEncoderDecoderModel builds the captioning encoder.

The UperNet segmenter needs nothing more: its config is transformers' own "upernet" and its backbone
is built through AutoBackbone. Saved configs that run as remote code without the package register
what they need themselves (`SttCaptionerConfig` and `SttUperNetConfig` in their `__post_init__`).

Only the model and config modules are imported; captioning, conversion, data, metrics and the apps
load when first used.
"""

from __future__ import annotations


def register() -> None:
    """Register the timm models and the transformers Auto classes (idempotent)."""
    from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

    from . import models  # noqa: F401  (its import registers the stt_* models with timm)
    from .hf.configuration_stt import SttConfig, SttVisionConfig
    from .hf.modeling_stt import SttBackbone, SttForImageClassification, SttModel, SttVisionEncoder

    AutoConfig.register(SttConfig.model_type, SttConfig, exist_ok=True)
    AutoModel.register(SttConfig, SttModel, exist_ok=True)
    AutoModelForImageClassification.register(SttConfig, SttForImageClassification, exist_ok=True)
    AutoBackbone.register(SttConfig, SttBackbone, exist_ok=True)
    AutoConfig.register(SttVisionConfig.model_type, SttVisionConfig, exist_ok=True)
    AutoModel.register(SttVisionConfig, SttVisionEncoder, exist_ok=True)
    register_plugin()


def register_plugin() -> None:
    """`SttPluginConfig` ("stt_plugin", any timm CNN with attention added) with the Auto classes, and its
    captioning encoder `SttPluginVisionConfig` ("stt_plugin_vision") with AutoConfig and AutoModel."""
    from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

    from .hf.configuration_stt_plugin import SttPluginConfig, SttPluginVisionConfig
    from .hf.modeling_stt_plugin import (
        SttPluginBackbone,
        SttPluginForImageClassification,
        SttPluginModel,
        SttPluginVisionEncoder,
    )

    AutoConfig.register(SttPluginConfig.model_type, SttPluginConfig, exist_ok=True)
    AutoModel.register(SttPluginConfig, SttPluginModel, exist_ok=True)
    AutoModelForImageClassification.register(SttPluginConfig, SttPluginForImageClassification, exist_ok=True)
    AutoBackbone.register(SttPluginConfig, SttPluginBackbone, exist_ok=True)
    AutoConfig.register(SttPluginVisionConfig.model_type, SttPluginVisionConfig, exist_ok=True)
    AutoModel.register(SttPluginVisionConfig, SttPluginVisionEncoder, exist_ok=True)
    from .models.plugin import ON_ADDED

    if _on_added not in ON_ADDED:
        ON_ADDED.append(_on_added)


def _on_added(model) -> None:
    # transformers' own CNNs keep their attention in the config and save their code
    # (stt_hf.hf.attached), imported only when such a model gets attention.
    if type(model).__module__.startswith(("transformers.models.", "stt_hf.hf.attached")):
        from .hf.attached import on_added

        on_added(model)


__all__ = ["register"]
