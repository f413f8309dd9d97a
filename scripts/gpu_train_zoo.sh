#!/usr/bin/env bash
# One-shot GPU training of conjure-zoo on the lent device (see docs/zoo_model_card.md).
# Run from the repository root with `wheels/` (diffusers + importlib_metadata) carried along.
# Training stops itself after TRAIN_SECONDS of wall-clock time and always leaves its EMA
# weights, log and loss plot under $OUT, even when cut short.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TQDM_MININTERVAL=15
OUT=${OUT:-/tmp/zoo-out}
RUN=/tmp/zoo-run
mkdir -p "$OUT" "$RUN"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
python3 -m conjure_metrics.zoo.train --out "$RUN" --preset "${PRESET:-base}" --device "${DEVICE:-cuda}" --bf16 \
    --batch-size "${BATCH_SIZE:-512}" --lr 4e-4 --warmup 300 --steps 200000 \
    --max-seconds "${TRAIN_SECONDS:-420}" --checkpoint-minutes 2 --log-every 50 --workers "${WORKERS:-8}" --seed 0 \
    2>&1 | tee "$OUT/train.log"
status=$?
mkdir -p "$OUT/weights"
cp "$RUN"/weights/*.safetensors "$OUT/weights/" 2>/dev/null
cp "$RUN"/log.json "$RUN"/loss.png "$OUT/" 2>/dev/null
ls -la "$OUT" "$OUT/weights"
python3 -c "import json; l=json.load(open('$RUN/log.json')); r=l['records']; print('steps', l['step'], 'seconds', round(l['train_seconds']), 'last losses', [round(x['loss'],4) for x in r[-5:]])"
exit $status
