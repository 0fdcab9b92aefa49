#!/usr/bin/env bash
# Set up (if needed) and run everything CI checks: lint, format, the C++ extension, the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "[test] ruff"
ruff check .
ruff format --check .
echo "[test] import layers (import-linter; contracts in pyproject.toml)"
lint-imports
echo "[test] the compiled extension must have built"
python -c "import fastscarlet._C as C; print('fastscarlet._C', C.__version__)"
echo "[test] unit tests"
python -m pytest -q -m "not interpreter" "$@"
echo "[test] Triton kernels on CPU (TRITON_INTERPRET=1)"
TRITON_INTERPRET=1 python -m pytest -q -m interpreter "$@"
