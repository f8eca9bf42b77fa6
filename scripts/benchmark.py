"""Benchmark STT blocks and STT ResNets against attention baselines (the same as `stt-hf bench`).

    python scripts/benchmark.py                    # default grid, writes outputs/bench/
    python scripts/benchmark.py --preset targets   # the targets check (also scripts/benchmark_block.py)
    python scripts/benchmark.py --quick            # smoke test
    python scripts/benchmark.py -h                 # every option

See stt_hf/experiments/benchmark.py for what is measured and how.
"""

from stt_hf.experiments.benchmark import main

if __name__ == "__main__":
    main()
