"""Semantic segmentation with an STT backbone inside transformers' own UperNet head.

`UperNetForSemanticSegmentation` takes any `AutoBackbone` through `backbone_config`; `SttBackbone`
is one once `stt_hf` is imported. The two classes here only make a saved segmenter self-contained:

- `SttUperNetConfig` is a `UperNetConfig` (model_type "upernet") that, when saved, writes the model code
  into the folder with an `auto_map`, and a `preprocessor_config.json` (see `segmentation_image_processor`)
  for `pipeline("image-segmentation")` if the folder has none;
- `SttUperNetForSemanticSegmentation` is `UperNetForSemanticSegmentation` with that config class, what
  `AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True)` builds where stt_hf is
  not installed (it then needs only torch, timm and transformers).

Where stt_hf is imported, the folder loads without remote code as a plain `UperNetForSemanticSegmentation`
with the same weights.

This module is copied flat into saved folders: it imports only modules that sit beside it there.
"""

import os

from transformers import AutoBackbone, AutoConfig, SegformerImageProcessor, UperNetConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.upernet.modeling_upernet import UperNetForSemanticSegmentation

from .configuration_stt import SttConfig
from .modeling_stt import SttBackbone, init_blocks
from .remote_code import REMOTE_CODE_MODULES, save_with_code

STAGES = ["stage1", "stage2", "stage3", "stage4"]
IGNORE_INDEX = 255  # mask value that no loss or metric counts (UperNet's loss_ignore_index)


def _register_backbone() -> None:
    """Make "stt" configs resolvable and buildable as backbones, where this module runs as remote code
    without the package (`stt_hf.registration` does it for the package). Where stt_hf registered its own
    classes already, "stt" stays theirs (this module does not take the name over)."""
    if SttConfig.model_type not in CONFIG_MAPPING:
        AutoConfig.register(SttConfig.model_type, SttConfig)
    AutoBackbone.register(SttConfig, SttBackbone, exist_ok=True)


class SttUperNetConfig(UperNetConfig):
    """A UperNetConfig whose backbone is an `SttConfig`, saved with the code that builds it."""

    auto_classes = {"AutoConfig": "modeling_stt_seg.SttUperNetConfig",
                    "AutoModelForSemanticSegmentation": "modeling_stt_seg.SttUperNetForSemanticSegmentation"}

    def __post_init__(self, **kwargs):
        # The backbone sub-config is resolved through AutoConfig by its model_type "stt": make it known,
        # also where this module runs as remote code without the package.
        _register_backbone()
        super().__post_init__(**kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        if not os.path.exists(os.path.join(save_directory, "preprocessor_config.json")):
            os.makedirs(save_directory, exist_ok=True)
            segmentation_image_processor(self).save_pretrained(save_directory)
        save_with_code(self, super().save_pretrained, save_directory, push_to_hub,
                       modules=(*REMOTE_CODE_MODULES, "modeling_stt_seg"), **kwargs)


class SttUperNetForSemanticSegmentation(UperNetForSemanticSegmentation):
    """UperNet with an STT backbone; logits (B, num_labels, H, W) at the input size."""

    config_class = SttUperNetConfig

    def __init__(self, config):
        if not isinstance(config, SttUperNetConfig):  # e.g. a plain UperNetConfig
            config = SttUperNetConfig.from_dict(config.to_dict())
        super().__init__(config)

    def initialize_weights(self) -> None:
        """transformers' initialization, then the backbone's blocks that start as the identity."""
        super().initialize_weights()
        init_blocks(self.backbone)


def segmentation_image_processor(config) -> SegformerImageProcessor:
    """The image processor of a segmenter: resize to the backbone's input size, scale, normalize.

    SegformerImageProcessor is transformers' plain resize-and-normalize processor whose
    `post_process_semantic_segmentation` (argmax, then resize to each image's size) is what
    `pipeline("image-segmentation")` calls; labels are used as they are (`do_reduce_labels=False`).
    """
    backbone = config.backbone_config
    size = backbone.img_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    data = backbone.data_config
    resample = {"bilinear": 2, "bicubic": 3, "nearest": 0, "lanczos": 1}.get(data["interpolation"], 2)
    return SegformerImageProcessor(size={"height": height, "width": width}, resample=resample,
                                   image_mean=list(data["mean"]), image_std=list(data["std"]),
                                   do_reduce_labels=False)


def build_segmenter(backbone: str | SttConfig = "stt_resnet10_s", *, labels: list[str],
                    hidden_size: int = 64, use_auxiliary_head: bool = True,
                    **backbone_overrides) -> SttUperNetForSemanticSegmentation:
    """A fresh UperNet segmenter over an STT backbone returning all four stages.

    backbone: a registered timm name (e.g. "stt_resnet18") with `backbone_overrides` (SttConfig fields such
    as img_size, small_input, channels), or an SttConfig. labels: class names, index = mask value.
    hidden_size: width of the UperNet head (transformers' default 512 is for 512 px ADE20k models).
    """
    if isinstance(backbone, str):
        backbone_config = SttConfig.from_timm_name(backbone, out_features=STAGES, **backbone_overrides)
    else:
        backbone_config = backbone
    id2label = dict(enumerate(labels))
    config = SttUperNetConfig(
        backbone_config=backbone_config, num_labels=len(labels), id2label=id2label,
        label2id={name: i for i, name in id2label.items()}, hidden_size=hidden_size,
        use_auxiliary_head=use_auxiliary_head, auxiliary_channels=max(16, hidden_size // 2),
        auxiliary_in_channels=None, loss_ignore_index=IGNORE_INDEX)
    return SttUperNetForSemanticSegmentation(config)


__all__ = ["IGNORE_INDEX", "SttUperNetConfig", "SttUperNetForSemanticSegmentation", "build_segmenter",
           "segmentation_image_processor"]
