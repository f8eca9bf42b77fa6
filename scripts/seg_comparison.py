#!/usr/bin/env python
"""Where attention goes in a segmentation backbone: one train-seg recipe, each module at the same places.

See stt_hf/experiments/seg_comparison.py.
"""

import sys

from stt_hf.experiments.seg_comparison import main

if __name__ == "__main__":
    sys.exit(main())
