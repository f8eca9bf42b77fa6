#!/usr/bin/env python
"""Train the captioner with STT, plain and self-attention encoders.

See stt_hf/experiments/caption_comparison.py.
"""

import sys

from stt_hf.experiments.caption_comparison import main

if __name__ == "__main__":
    sys.exit(main())
