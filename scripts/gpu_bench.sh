#!/usr/bin/env bash
# One-shot GPU benchmark of the engine on an SD-1.5-sized UNet (see benchmarks/bench_gpu.py).
# Run from the repository root on the lent device with `wheels/` (diffusers) carried along.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# Eager baseline first (same machine as the compiled runs), then one fixed-shape compiled graph,
# then the same with CUDA graphs; each run prints its table even if a later one fails.
run() { python3 benchmarks/bench_gpu.py --dtype bfloat16 --pairs 32 --max-batch-size 192 "$@" 2>&1 | grep -v "Loading\|kept in float32"; }
run --out "$OUT/bench_gpu_bf16.json"
run --compile --out "$OUT/bench_gpu_bf16_compile.json"
run --compile --cuda-graphs --out "$OUT/bench_gpu_bf16_cuda_graphs.json"
run --compile --cuda-graphs --tuned --out "$OUT/bench_gpu_bf16_cuda_graphs_tuned.json"
