#!/usr/bin/env bash
# Tries stt-hf with the newest releases of its dependencies, in a throwaway virtual environment, and
# reports what breaks. Not part of CI: run it by hand before moving the lock (constraints.txt).
#
# Usage: bash scripts/try_latest.sh [pytest args]   e.g. bash scripts/try_latest.sh -x -k "not slow"
# Env:   TRY_VENV (default: a fresh temporary folder, removed at the end; set it to keep the venv)
#        TRY_TORCH (default: the pins of setup_env.sh; "latest" upgrades torch/torchvision too)
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${TRY_VENV:-$(mktemp -d -t stt-hf-latest.XXXXXX)}
EXTRAS="test,data,caption,export,demo"
report="$VENV/report.txt"
cleanup() { [ -n "${TRY_VENV:-}" ] || rm -rf "$VENV"; }
trap cleanup EXIT

echo "== throwaway venv: $VENV"
"$PYTHON" -m venv "$VENV" || exit 1
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
torch_pins=$(grep -o 'torch==[^ )]*\|torchvision==[^ )]*' scripts/setup_env.sh | tr '\n' ' ')
if [ "${TRY_TORCH:-}" = latest ]; then torch_pins="torch torchvision"; fi
# No -c constraints.txt: the resolver takes the newest releases pyproject.toml allows.
python -m pip install --quiet --upgrade --upgrade-strategy eager $torch_pins -e ".[$EXTRAS]" || {
  echo "== the newest releases do not even install together (see pip's message above)"; exit 1; }

echo "== versions that differ from constraints.txt (locked -> newest)"
python - <<'PY' | tee "$report"
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

for line in Path("constraints.txt").read_text().splitlines():
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line.strip())
    if not match:
        continue
    try:
        now = version(match[1])
    except PackageNotFoundError:
        now = "(not installed)"
    if now != match[2]:
        print(f"  {match[1]:32s} {match[2]:>14s} -> {now}")
PY

echo "== ruff"
ruff check . || echo "ruff check fails with the newest ruff (above)" | tee -a "$report"

echo "== test suite against the newest releases"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false STT_HF_UNLOCKED=1
python -m pytest -q -n "${STT_HF_TEST_WORKERS:-2}" -p no:cacheprovider -rfE "$@" 2>&1 | tee "$VENV/pytest.log"
status=${PIPESTATUS[0]}

echo
echo "== summary"
cat "$report"
if [ "$status" = 0 ]; then
  echo "all tests pass with the newest releases: python scripts/update_lock.py in this venv moves the lock"
else
  echo "what breaks (pytest exit status $status):"
  grep -E '^(FAILED|ERROR) ' "$VENV/pytest.log" | sed 's/^/  /'
fi
exit "$status"
