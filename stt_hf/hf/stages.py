"""SttStage: a stage of the timm network as transformers' `GradientCheckpointingLayer`.

The transformers classes rebuild each of the network's four stages (`layer1` ... `layer4`, timm's
`nn.Sequential` of residual blocks) as an SttStage holding the same blocks under the same names, so the
weights and the forward pass do not change, and transformers' activation checkpointing finds the stages: it
sets their `gradient_checkpointing` flag and checkpointing function (with the `gradient_checkpointing_kwargs`
asked for).

Its own module because `transformers.modeling_layers` imports the tokenizers, which `import stt_hf` does not
load: `SttPreTrainedModel` imports it when it first builds a network.
"""

from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


class SttStage(GradientCheckpointingLayer, nn.Sequential):
    """One stage of the network (its blocks, in order), which transformers' activation checkpointing
    (`model.gradient_checkpointing_enable()`, the Trainer's `gradient_checkpointing=True`) recomputes in the
    backward pass instead of keeping its activations."""


__all__ = ["SttStage"]
