#!/usr/bin/env python
"""The main job's recipe on a plugged ConvNeXt: plain vs STT vs the capacity control.

See stt_hf/experiments/plugin_comparison.py.
"""

import sys

from stt_hf.experiments.plugin_comparison import main

if __name__ == "__main__":
    sys.exit(main())
