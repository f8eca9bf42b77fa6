#!/usr/bin/env python
"""Train the captioner with five encoders (STT, plain ResNet, self-attention, flattened synthesizer,
STT over the h and w modes only) at several seeds on fashion_scenes; resumable, with a mean ± std report.

    python scripts/caption_comparison.py                          # 5 encoders x seeds 0 1 2
    python scripts/caption_comparison.py --encoders stt plain --seeds 0 1 --dataset tuxpaint
    python scripts/caption_comparison.py -- --num_train_epochs 5  # anything after -- goes to train-caption
    python scripts/caption_comparison.py --report_only            # tables and grid from runs.jsonl

See stt_hf/experiments/caption_comparison.py.
"""

import sys

from stt_hf.experiments.caption_comparison import main

if __name__ == "__main__":
    sys.exit(main())
