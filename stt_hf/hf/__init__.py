"""transformers classes that wrap the timm network: configs, models, captioner, segmenter, conversion."""
