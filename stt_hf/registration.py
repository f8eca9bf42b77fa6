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
    from . import models  # noqa: F401  (its import registers the stt_* models with timm)
    from .hf.configuration_stt import SttConfig, SttVisionConfig
    from .hf.modeling_stt import SttBackbone, SttForImageClassification, SttModel, SttVisionEncoder

    _register_family(SttConfig, SttModel, SttForImageClassification, SttBackbone,
                     SttVisionConfig, SttVisionEncoder)
    register_plugin()


def _register_family(config, model, classifier, backbone, vision_config, vision_encoder) -> None:
    """One family's classes with the Auto classes: the trunk's config, and its captioning encoder's."""
    from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

    AutoConfig.register(config.model_type, config, exist_ok=True)
    AutoModel.register(config, model, exist_ok=True)
    AutoModelForImageClassification.register(config, classifier, exist_ok=True)
    AutoBackbone.register(config, backbone, exist_ok=True)
    AutoConfig.register(vision_config.model_type, vision_config, exist_ok=True)
    AutoModel.register(vision_config, vision_encoder, exist_ok=True)


def register_plugin() -> None:
    """`SttPluginConfig` ("stt_plugin", any timm CNN with attention added) with the Auto classes, and its
    captioning encoder `SttPluginVisionConfig` ("stt_plugin_vision") with AutoConfig and AutoModel."""
    from .hf.configuration_stt_plugin import SttPluginConfig, SttPluginVisionConfig
    from .hf.modeling_stt_plugin import (
        SttPluginBackbone,
        SttPluginForImageClassification,
        SttPluginModel,
        SttPluginVisionEncoder,
    )

    _register_family(SttPluginConfig, SttPluginModel, SttPluginForImageClassification, SttPluginBackbone,
                     SttPluginVisionConfig, SttPluginVisionEncoder)
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
