#!/usr/bin/env bash
# The GPU check: STT against resnet50, its capacity control and seresnet50 (eager, compiled, CUDA
# graphs), STT against self-attention blocks, and a 200-step main-job run, in about 8 minutes on one
# recent NVIDIA GPU. Results: outputs/gpu_check/results.{json,md}. `--dry_run` runs it on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export TOKENIZERS_PARALLELISM=false
python -m stt_hf.experiments.gpu_check "$@"
