"""`python -m stt_hf.experiments.benchmark [options]`: the benchmark, or (`--worker SPEC`) one block row's
worker process."""

from .cli import main

main()
