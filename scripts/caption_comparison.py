#!/usr/bin/env python
"""Train the captioner with STT, plain and self-attention encoders (see stt_hf/caption_comparison.py)."""

import sys

from stt_hf.caption_comparison import main

if __name__ == "__main__":
    sys.exit(main())
