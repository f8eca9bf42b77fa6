#!/usr/bin/env bash
# The main job from a clean clone: sets up .venv and the data, then runs the default job.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh --data
python scripts/benchmark_block.py "$@"
