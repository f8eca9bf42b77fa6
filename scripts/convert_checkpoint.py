#!/usr/bin/env python
"""Convert STT checkpoints between timm format and transformers format (also `stt-hf convert`).

    python scripts/convert_checkpoint.py TIMM_DIR HF_DIR                 # timm folder -> transformers
    python scripts/convert_checkpoint.py HF_DIR TIMM_DIR                 # transformers -> timm folder
    python scripts/convert_checkpoint.py weights.pth HF_DIR --model-name stt_resnet18_s --allow-pickle

The direction follows from the source; see `stt_hf.hf.convert` for the formats.
"""

import sys

from stt_hf.hf.convert import main

if __name__ == "__main__":
    sys.exit(main())
