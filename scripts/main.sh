#!/usr/bin/env bash
# The main job from a clean clone: sets up .venv and the data, then trains the default STT model on
# Fashion-MNIST (stt-hf train with its defaults). Extra args go to stt-hf train. Running it again
# replaces its own earlier outputs (--overwrite_output_dir true; pass `--overwrite_output_dir false` to
# keep them, or another --output_dir).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh --data
export TOKENIZERS_PARALLELISM=false
stt-hf train --overwrite_output_dir true "$@"
