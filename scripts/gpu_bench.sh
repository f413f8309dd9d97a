#!/usr/bin/env bash
# One-shot GPU benchmark of the engine on an SD-1.5-sized UNet (see benchmarks/bench_gpu.py).
# Run from the repository root on the lent device with `wheels/` (diffusers) carried along.
# Device calls are capped at 10 minutes: runs go from most to least informative, each under its own
# timeout, and each writes its JSON as soon as it finishes, so a cut-off call still returns results.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/bench-out}
RUN_TIMEOUT=${RUN_TIMEOUT:-240}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
run() {
  timeout "$RUN_TIMEOUT" python3 benchmarks/bench_gpu.py --dtype bfloat16 --pairs 32 --max-batch-size 192 "$@" 2>&1 \
    | grep -v "Loading\|kept in float32"
  local status=${PIPESTATUS[0]}
  echo "[$(date +%T)] exit $status (124: timed out) for: $*"
}
# Eager baseline on this machine, then the variant most likely to close the gap (one fixed-shape
# compiled graph replayed with CUDA graphs, fused QKV, diffusers' inductor settings), then the
# steps in between to say which part helps. Compiled runs share inductor's on-disk cache.
run --out "$OUT/bench_gpu_bf16.json"
run --compile --cuda-graphs --tuned --out "$OUT/bench_gpu_bf16_cuda_graphs_tuned.json"
run --compile --cuda-graphs --out "$OUT/bench_gpu_bf16_cuda_graphs.json"
run --compile --out "$OUT/bench_gpu_bf16_compile.json"
