#!/usr/bin/env python
"""Train and compare attention variants on Fashion-MNIST and MNIST-5k (see stt_hf/experiments/ablation.py)."""

import sys

from stt_hf.experiments.ablation import main

if __name__ == "__main__":
    sys.exit(main())
