"""SttCaptioner and SttPluginCaptioner: VisionEncoderDecoderModels whose encoder is an STT network,
`SttVisionEncoder` (the STT ResNet) or `SttPluginVisionEncoder` (a plugged timm CNN).

Its own module because VisionEncoderDecoderModel loads transformers' generation stack and tokenizers, which
the classifiers do not need. A saved captioner carries this file with the model code (`auto_map`).
"""

from transformers import VisionEncoderDecoderModel

from .configuration_stt import SttCaptionerConfig
from .configuration_stt_plugin import SttPluginCaptionerConfig
from .modeling_stt import SttVisionEncoder, init_blocks
from .modeling_stt_plugin import SttPluginVisionEncoder


class SttCaptioner(VisionEncoderDecoderModel):
    """VisionEncoderDecoderModel with an `SttVisionEncoder`: what a saved captioner loads as remote code.

    In this package, plain `VisionEncoderDecoderModel` works just as well (`import stt_hf` registers the
    encoder with AutoModel); this class exists so that a checkpoint carries code that builds its encoder
    where the package is not installed.
    """

    config_class = SttCaptionerConfig
    encoder_class = SttVisionEncoder

    def __init__(self, config: SttCaptionerConfig | None = None, encoder=None, decoder=None):
        if config is None and encoder is not None and decoder is not None:
            config = self.config_class.from_encoder_decoder_configs(encoder.config, decoder.config)
        elif config is not None and not isinstance(config, self.config_class):
            # e.g. from from_encoder_decoder_pretrained
            config = self.config_class.from_dict(config.to_dict())
        if encoder is None and config is not None:
            encoder = self.encoder_class(config.encoder)
        super().__init__(config, encoder=encoder, decoder=decoder)

    def initialize_weights(self) -> None:
        """transformers' initialization, then the encoder's blocks that start as the identity."""
        super().initialize_weights()
        init_blocks(self.encoder)


class SttPluginCaptioner(SttCaptioner):
    """VisionEncoderDecoderModel with an `SttPluginVisionEncoder` (e.g. the trunk of `stt_convnext_s`)."""

    config_class = SttPluginCaptionerConfig
    encoder_class = SttPluginVisionEncoder

    def initialize_weights(self) -> None:
        # timm initialized the trunk when it built it, attention at the identity: transformers' pass only
        # reaches what the encoder's own `_init_weights` handles (its position grid).
        VisionEncoderDecoderModel.initialize_weights(self)


__all__ = ["SttCaptioner", "SttPluginCaptioner"]
