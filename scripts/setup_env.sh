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
want="$(cat pyproject.toml constraints.txt scripts/setup_env.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing ${TORCH_PINS[*]} and stt-hf (first run takes a few minutes)"
  python -m pip install --quiet "${TORCH_PINS[@]}"
  # constraints.txt: the exact versions the suite passed with (python scripts/update_lock.py).
  python -m pip install --quiet -c constraints.txt -e ".[test,data,caption,export,demo]" "${TORCH_PINS[@]}"
  echo "$want" > "$stamp"
fi

# transformers' own common model tests (tests/test_modeling_common.py and the mixins it imports) ship only
# in its source distribution: unpack its tests/ folder into the venv for tests/test_hf_common.py.
tf_version="$(python -c 'import transformers; print(transformers.__version__)')"
tf_tests="$VENV/transformers-tests/$tf_version"
if [ ! -f "$tf_tests/transformers_tests/test_modeling_common.py" ]; then
  echo "== fetching the test files of transformers $tf_version (its source distribution)"
  tmp="$(mktemp -d)"
  python -m pip download --quiet --no-deps --no-binary :all: "transformers==$tf_version" -d "$tmp"
  mkdir -p "$tmp/transformers_tests"
  tar xzf "$tmp/transformers-$tf_version.tar.gz" -C "$tmp/transformers_tests" --strip-components=2 \
    "transformers-$tf_version/tests"
  touch "$tmp/transformers_tests/__init__.py"  # a package, as tests/ is in transformers' repository
  rm -rf "$tf_tests" && mkdir -p "$tf_tests" && mv "$tmp/transformers_tests" "$tf_tests/"
  rm -rf "$tmp"
fi

if [ "${1:-}" = "--data" ]; then
  # Offline data ships as Debian packages: Fashion-MNIST, the Tux Paint stamps (captioned photos),
  # Noto color emoji (rendered emoji named by Unicode), and Java for the METEOR scorer and the PTB
  # tokenizer of pycocoevalcap. Without root, Fashion-MNIST falls back to the Hub when online.
  fmnist_dir=${STT_HF_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
  packages=()
  [ -f "$fmnist_dir/train-images-idx3-ubyte.gz" ] || packages+=(dataset-fashion-mnist)
  [ -d /usr/share/tuxpaint/stamps ] || packages+=(tuxpaint-stamps-default)
  [ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || packages+=(fonts-noto-color-emoji)
  command -v java >/dev/null || packages+=(default-jre-headless)
  # The browser the demo's tests drive (they skip, saying why, without it).
  [ -x /usr/bin/chromium ] || packages+=(chromium)
  if [ ${#packages[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      echo "== installing the Debian packages ${packages[*]}"
      apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    else
      echo "== missing Debian packages (install them as root): ${packages[*]}" >&2
    fi
  fi
fi
