"""SttCaptioner: a VisionEncoderDecoderModel whose encoder is `SttVisionEncoder`.

Its own module because VisionEncoderDecoderModel loads transformers' generation stack and tokenizers, which
the classifiers do not need. A saved captioner carries this file with the model code (`auto_map`).
"""

from transformers import VisionEncoderDecoderModel

from .configuration_stt import SttCaptionerConfig
from .modeling_stt import SttVisionEncoder, init_blocks


class SttCaptioner(VisionEncoderDecoderModel):
    """VisionEncoderDecoderModel with an `SttVisionEncoder`: what a saved captioner loads as remote code.

    In this package, plain `VisionEncoderDecoderModel` works just as well (`import stt_hf` registers the
    encoder with AutoModel); this class exists so that a checkpoint carries code that builds its encoder
    where the package is not installed.
    """

    config_class = SttCaptionerConfig

    def __init__(self, config: SttCaptionerConfig | None = None, encoder=None, decoder=None):
        if config is None and encoder is not None and decoder is not None:
            config = SttCaptionerConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
        elif config is not None and not isinstance(config, SttCaptionerConfig):
            # e.g. from from_encoder_decoder_pretrained
            config = SttCaptionerConfig.from_dict(config.to_dict())
        if encoder is None and config is not None:
            encoder = SttVisionEncoder(config.encoder)
        super().__init__(config, encoder=encoder, decoder=decoder)

    def initialize_weights(self) -> None:
        """transformers' initialization, then the encoder's blocks that start as the identity."""
        super().initialize_weights()
        init_blocks(self.encoder)


__all__ = ["SttCaptioner"]
