#!/usr/bin/env bash
# Create .venv (once) and install the pinned environment and fastscarlet (editable, with its C++
# extension). Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.fastscarlet-requirements
if [ ! -f "$stamp" ] || ! cmp -s requirements/dev.txt "$stamp"; then
  echo "[setup] installing requirements/dev.txt (torch, torchvision, DALI, test tools)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements/dev.txt
  cp requirements/dev.txt "$stamp"
fi
echo "[setup] installing fastscarlet (editable) and building fastscarlet._C"
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
