#!/usr/bin/env bash
# Everything this project does on a lent GPU, as one prepared command (see docs/benchmarks.md):
#   1. train the tiny VGGT (scripts/train_gpu.py) for TRAIN_MINUTES,
#   2. the per-GEMM / activation-quant kernel benchmark (python -m qvggt_kernels.bench),
#   3. the end-to-end VGGT-1B aggregator benchmark (scripts/bench_e2e.py).
# Each stage has its own time limit, so a stage that fails or hangs leaves the others their time.
# Works from a plain checkout on a machine whose python3 has torch + triton (no pip install):
#   OUT=runs/gpu_session TRAIN_MINUTES=5 bash scripts/gpu_session.sh
# Files (8, flat enough for the device tool): session.log, kernels.json, e2e.json and
# train/{weights_0,weights_1}.safetensors, train/{log.jsonl,run.json,eval.json}.
set -u
OUT=${OUT:-runs/gpu_session}
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
TRAIN_ARGS=${TRAIN_ARGS:-}  # extra scripts/train_gpu.py options (e.g. a CPU smoke run: --device cpu ...)
mkdir -p "$OUT/train"
export PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
shim=$(mktemp -d)  # qvggt_kernels lives in kernels/ (pyproject package-dir); import it without pip
ln -s "$PWD/kernels" "$shim/qvggt_kernels"
export PYTHONPATH="$PWD:$shim${PYTHONPATH:+:$PYTHONPATH}"
log="$OUT/session.log"

stage() {  # stage SECONDS NAME COMMAND...
  local limit=$1 name=$2; shift 2
  echo "=== $name (limit ${limit}s) $(date -u +%FT%TZ)" | tee -a "$log"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$log"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, triton, platform; print('torch', torch.__version__, 'triton', triton.__version__, 'python', platform.python_version(), 'cpus', __import__('os').cpu_count())"
} 2>&1 | tee -a "$log"

# shellcheck disable=SC2086
stage "$(awk "BEGIN {print int($TRAIN_MINUTES * 60 + 75)}")" train \
  python3 scripts/train_gpu.py --minutes "$TRAIN_MINUTES" --out "$OUT/train" $TRAIN_ARGS
stage 110 kernels python3 -m qvggt_kernels.bench --frames 1 10 40 --json "$OUT/kernels.json"
stage 120 e2e python3 scripts/bench_e2e.py --schemes bf16 w8a8 w4a4 --frames 1 10 20 40 --warmup 2 --iters 5 \
  --json "$OUT/e2e.json"
