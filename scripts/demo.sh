#!/usr/bin/env bash
# Set up (if needed) and run the end-to-end demo on its default data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fastscarlet models "$@"
