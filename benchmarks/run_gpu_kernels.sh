#!/usr/bin/env bash
# Issue 19's GPU figures in one command, on a machine with one CUDA GPU:
#
#     bash benchmarks/run_gpu_kernels.sh [OUT]      # OUT default: benchmarks/results/gpu-<date>
#
# 1. every `gpu` test (the kernels at real shapes: whole-block, partial fusion, halo depthwise,
#    LET, grouped; CUDA graphs), 2. bench_mbconv.py (the 19 Scarlet-A blocks: every dispatch
#    candidate vs eager and torch.compile, the dispatch table, the whole training step),
#    3. bench_depthwise.py (the depthwise kernels vs cuDNN), 4. bench_cuda_graphs.py. Each writes
#    JSON + markdown under OUT; the dispatch's decisions stay in OUT/dispatch. A failing step does
#    not stop the later ones; the exit status says whether all passed. Not yet run on a GPU (its
#    time is unmeasured); where a call may last at most 10 minutes, run the steps one by one
#    (bench_mbconv.py and bench_depthwise.py also take --layers and --merge).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu-$(date -u +%Y%m%d)}
mkdir -p "$OUT"
status=0
step() {
    echo "[gpu] $*" >&2
    "$@" || status=1
}
step bash -c "python -m pytest -q -m gpu tests/ 2>&1 | tee '$OUT/gpu_tests.txt'; exit \${PIPESTATUS[0]}"
step python benchmarks/bench_mbconv.py --cache-dir "$OUT/dispatch" \
    --json "$OUT/mbconv.json" --markdown "$OUT/mbconv.md"
step python benchmarks/bench_depthwise.py --json "$OUT/depthwise.json" --markdown "$OUT/depthwise.md"
step python benchmarks/bench_cuda_graphs.py --json "$OUT/cuda_graphs.json" \
    --markdown "$OUT/cuda_graphs.md"
exit $status
