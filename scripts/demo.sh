#!/usr/bin/env bash
# Set up (if needed) and run the main job: fastscarlet demo, end to end on Fashion-MNIST
# (train a supernet, search it, export the chosen models, write runs/demo/report.html).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The default data: Debian's dataset-fashion-mnist (the IDX files), installed where apt is
# available and the files are missing; `fastscarlet demo` writes the ImageFolder tree from them.
case " $* " in *" --data "*|*" --data="*) want_fmnist=0 ;; *) want_fmnist=1 ;; esac
if [ "$want_fmnist" = 1 ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "[demo] installing Debian's dataset-fashion-mnist"
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi
    $SUDO apt-get install -y dataset-fashion-mnist >/dev/null \
      || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y dataset-fashion-mnist >/dev/null; }
  fi
fi
# On a small shared CPU, OpenMP threads that spin while they wait for a core make every step
# several times slower (benchmarks/RESULTS.md): let them sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/fastscarlet demo --force "$@"
