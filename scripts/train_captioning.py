#!/usr/bin/env python
"""Train an STT-encoder image captioner: the same as `stt-hf train-caption` (see --help)."""

import os
import sys

from stt_hf.tasks.train_caption import main

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1:])
