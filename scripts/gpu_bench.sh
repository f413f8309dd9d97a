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
python3 benchmarks/bench_gpu.py --dtype bfloat16 --pairs 32 --max-batch-size 192 --out "$OUT/bench_gpu_bf16.json" 2>&1 | grep -v "Loading\|kept in float32"
python3 benchmarks/bench_gpu.py --dtype bfloat16 --channels-last --pairs 32 --max-batch-size 192 --out "$OUT/bench_gpu_bf16_channels_last.json" 2>&1 | grep -v "Loading\|kept in float32"
python3 benchmarks/bench_gpu.py --dtype float16 --pairs 32 --max-batch-size 192 --out "$OUT/bench_gpu_fp16.json" 2>&1 | grep -v "Loading\|kept in float32"
