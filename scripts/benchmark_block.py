"""The targets check, now `stt-hf bench --preset targets`, writing to outputs/benchmark_block/ as before.

    python scripts/benchmark_block.py    # = stt-hf bench --preset targets --out outputs/benchmark_block
"""
import sys

from stt_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--preset", "targets", "--out", "outputs/benchmark_block", *sys.argv[1:]]))
