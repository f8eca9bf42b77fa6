#!/usr/bin/env python
"""The main job's recipe with every attention module at the same place.

See stt_hf/experiments/main_comparison.py.
"""

import sys

from stt_hf.experiments.main_comparison import main

if __name__ == "__main__":
    sys.exit(main())
