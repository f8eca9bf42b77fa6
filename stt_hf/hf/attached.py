"""Attention added to transformers' own CNNs (ResNet, ConvNext, RegNet): saved, published, loaded back.

`add_attention` works on a model built from `ResNetConfig`, `ConvNextConfig` or `RegNetConfig` as on a
timm model (at `encoder.stages`). For such a model it also

1. records the spec in the config, as plain JSON: `config.stt_attention`;
2. turns the model into the matching class of this module (e.g. `SttResNetForImageClassification`, a
   subclass of transformers' own), which builds the same attention from `config.stt_attention` when it
   is constructed, and whose `save_pretrained` writes this module (and what it imports) into the folder
   with an `auto_map`.

So a saved or pushed folder loads back with `AutoModelForImageClassification.from_pretrained(folder,
trust_remote_code=True)` where this package is not installed, and with the class of this module where it
is; without either, transformers' own class would drop the attention weights. The weights keep
transformers' key names, the attention modules' keys added.
"""

import os

from huggingface_hub import create_repo, upload_folder
from transformers import (
    ConvNextBackbone,
    ConvNextForImageClassification,
    ConvNextModel,
    RegNetForImageClassification,
    RegNetModel,
    ResNetBackbone,
    ResNetForImageClassification,
    ResNetModel,
)

from ..models.plugin import ON_ADDED, add_attention
from .remote_code import write_remote_code

CONFIG_FIELD = "stt_attention"
AUTO_NAMES = {
    "Model": "AutoModel",
    "ForImageClassification": "AutoModelForImageClassification",
    "Backbone": "AutoBackbone",
}


class AttentionAttached:
    """Mixin over a transformers CNN class: adds `config.stt_attention` when built; saves its own code."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        spec = getattr(config, CONFIG_FIELD, None)
        if spec and getattr(self, "attention_spec", None) is None:
            add_attention(self, **spec)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' from_pretrained, then the buffers no checkpoint holds (STT's cached pooling
        matrix), which a load that builds the model on the meta device leaves empty."""
        loaded = super().from_pretrained(*args, **kwargs)
        for module in (loaded[0] if isinstance(loaded, tuple) else loaded).modules():
            init_buffers = getattr(module, "init_non_persistent_buffers", None)
            if callable(init_buffers):
                init_buffers()
        return loaded

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """transformers' save, with this module's code and the `auto_map` to it; with push_to_hub, the
        whole folder is uploaded in one commit."""
        push = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "private", "token") if k in kwargs}
        os.makedirs(save_directory, exist_ok=True)
        module = __name__.rpartition(".")[2]
        write_remote_code(save_directory, (module,))
        family = type(self).__name__.removeprefix("Stt")
        family = next(family.removesuffix(s) for s in AUTO_NAMES if family.endswith(s))
        self.config.auto_map = {AUTO_NAMES[s]: f"{module}.Stt{family}{s}" for s in AUTO_NAMES
                                if f"Stt{family}{s}" in ATTACHED_NAMES}
        super().save_pretrained(save_directory, **kwargs)
        if push_to_hub:
            repo_id = push.get("repo_id") or os.path.basename(os.path.normpath(save_directory))
            repo_id = create_repo(repo_id, private=push.get("private"), token=push.get("token"),
                                  exist_ok=True).repo_id
            upload_folder(repo_id=repo_id, folder_path=save_directory, token=push.get("token"),
                          commit_message=push.get("commit_message") or "Upload model")


# transformers' classes with attention (backbones: ResNet and ConvNext have one in transformers; RegNet
# has none). The remote-code loader finds them by name in this module.


class SttResNetModel(AttentionAttached, ResNetModel):
    """ResNetModel with STT."""


class SttResNetForImageClassification(AttentionAttached, ResNetForImageClassification):
    """ResNetForImageClassification with STT."""


class SttResNetBackbone(AttentionAttached, ResNetBackbone):
    """ResNetBackbone with STT."""


class SttConvNextModel(AttentionAttached, ConvNextModel):
    """ConvNextModel with STT."""


class SttConvNextForImageClassification(AttentionAttached, ConvNextForImageClassification):
    """ConvNextForImageClassification with STT."""


class SttConvNextBackbone(AttentionAttached, ConvNextBackbone):
    """ConvNextBackbone with STT."""


class SttRegNetModel(AttentionAttached, RegNetModel):
    """RegNetModel with STT."""


class SttRegNetForImageClassification(AttentionAttached, RegNetForImageClassification):
    """RegNetForImageClassification with STT."""


# transformers' class -> its subclass with attention.
ATTACHED = {cls.__bases__[1]: cls for cls in (
    SttResNetModel,
    SttResNetForImageClassification,
    SttResNetBackbone,
    SttConvNextModel,
    SttConvNextForImageClassification,
    SttConvNextBackbone,
    SttRegNetModel,
    SttRegNetForImageClassification,
)}
ATTACHED_NAMES = {cls.__name__ for cls in ATTACHED.values()}


def on_added(model) -> None:
    """After `add_attention` on a transformers CNN: the spec in its config, the model in its class here."""
    cls = ATTACHED.get(type(model)) or (type(model) if type(model) in ATTACHED.values() else None)
    if cls is None:
        return
    model.config.stt_attention = model.attention_spec
    model.__class__ = cls


if __name__.rpartition(".")[0] != "stt_hf.hf" and on_added not in ON_ADDED:
    ON_ADDED.append(on_added)  # as remote code, where stt_hf.registration is not there to do it

__all__ = ["ATTACHED", "AttentionAttached", "on_added", *sorted(ATTACHED_NAMES)]
