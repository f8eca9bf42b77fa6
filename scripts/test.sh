#!/usr/bin/env bash
# The test suite from a clean clone: sets up .venv, then lint and tests. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh --data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check .
python -m pytest -q -n "${STT_HF_TEST_WORKERS:-2}" "$@"
