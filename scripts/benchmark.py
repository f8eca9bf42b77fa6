"""Benchmark STT blocks and STT ResNets against attention baselines (the same as `stt-hf bench`).

    python scripts/benchmark.py                    # default grid, writes outputs/bench/
    python scripts/benchmark.py --preset targets   # the targets check (also scripts/benchmark_block.py)
    python scripts/benchmark.py --quick            # smoke test
    python scripts/benchmark.py -h                 # every option

See the stt_hf/experiments/benchmark/ package for what is measured and how.
"""
import sys

from stt_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
