#!/usr/bin/env bash
# Creates the virtual environment .venv with the pinned torch and this package (idempotent).
# Usage: source scripts/setup_env.sh [--data]   (--data also installs the offline datasets)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${STT_HF_VENV:-.venv}
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)  # pinned together: a mismatched torchvision fails to import

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# Reinstall only when the dependency list changed.
stamp="$VENV/.stt-hf-installed"
want="$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing ${TORCH_PINS[*]} and stt-hf (first run takes a few minutes)"
  python -m pip install --quiet "${TORCH_PINS[@]}"
  python -m pip install --quiet -e ".[test,data]" "${TORCH_PINS[@]}"
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--data" ]; then
  # Fashion-MNIST ships as a Debian package; without root, the Hub copy is used when online.
  fmnist_dir=${STT_HF_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
  if [ ! -f "$fmnist_dir/train-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null \
      && [ "$(id -u)" = 0 ]; then
    echo "== installing the Debian package dataset-fashion-mnist"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null
  fi
fi
