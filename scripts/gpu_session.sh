#!/usr/bin/env bash
# Everything this project does on a lent GPU, as one prepared command (see docs/benchmarks.md):
#   1. train the tiny VGGT (scripts/train_gpu.py) for TRAIN_MINUTES, one run per TRAIN_VARIANTS
#      entry, all at once on the same GPU (each run is partly launch-bound, so they share it well),
#   2. the per-GEMM / activation-quant kernel benchmark (python -m qvggt_kernels.bench),
#   3. the end-to-end VGGT-1B aggregator benchmark (scripts/bench_e2e.py).
# Each stage has its own time limit, so a stage that fails or hangs leaves the others their time.
# Works from a plain checkout on a machine whose python3 has torch + triton (no pip install):
#   OUT=runs/gpu_session TRAIN_MINUTES=5 bash scripts/gpu_session.sh
#   OUT=runs/gpu_session TRAIN_MINUTES=6.5 BENCH=0 \
#     TRAIN_VARIANTS="a=--lr 1e-3;b=--lr 1e-3 --init-values 0.1" bash scripts/gpu_session.sh
# TRAIN_MINUTES=0 skips training, BENCH=0 the two benchmarks. Files (few, for the device tool):
# train_<name>/weights_{0,1}.safetensors per variant, and results.tar.gz with session.log,
# kernels.json, e2e.json and each variant's log.jsonl, run.json and eval.json.
set -u
OUT=${OUT:-runs/gpu_session}
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
TRAIN_VARIANTS=${TRAIN_VARIANTS:-main=}  # "name=extra train_gpu.py options;name2=..."
BENCH=${BENCH:-1}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
shim=$(mktemp -d)  # qvggt_kernels lives in kernels/ (pyproject package-dir); import it without pip
ln -s "$PWD/kernels" "$shim/qvggt_kernels"
export PYTHONPATH="$PWD:$shim${PYTHONPATH:+:$PYTHONPATH}"
log="$OUT/session.log"

stage() {  # stage SECONDS NAME COMMAND...
  local limit=$1 name=$2; shift 2
  echo "=== $name (limit ${limit}s) $(date -u +%FT%TZ)" | tee -a "$log"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | sed -u "s/^/[$name] /" | tee -a "$log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$log"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, triton, platform; print('torch', torch.__version__, 'triton', triton.__version__, 'python', platform.python_version(), 'cpus', __import__('os').cpu_count())"
} 2>&1 | tee -a "$log"

if [ "$TRAIN_MINUTES" != 0 ]; then
  IFS=';' read -ra variants <<< "$TRAIN_VARIANTS"
  n=${#variants[@]}
  cpus=$(nproc)
  # Render workers per run: half the cores in all. The trainers' own threads (Python launching
  # kernels, CUDA driver threads) need the rest: with 14 workers on 16 cores, one run's steps
  # took 650 ms instead of 450 ms (docs/gpu_results/train_tiny_h200_2026-11-26_s3).
  workers=$(( cpus / (2 * n) > 1 ? cpus / (2 * n) : 1 ))
  limit=$(awk "BEGIN {print int($TRAIN_MINUTES * 60 + 90)}")
  for variant in "${variants[@]}"; do
    name=${variant%%=*} extra=${variant#*=}
    mkdir -p "$OUT/train_$name"
    # shellcheck disable=SC2086
    stage "$limit" "train_$name" python3 scripts/train_gpu.py --minutes "$TRAIN_MINUTES" --out "$OUT/train_$name" \
      --workers "$workers" --prefill-workers "$workers" --bank $(( 16000 / n )) $extra &
  done
  wait
fi
if [ "$BENCH" != 0 ]; then
  stage 110 kernels python3 -m qvggt_kernels.bench --frames 1 10 40 --json "$OUT/kernels.json"
  stage 120 e2e python3 scripts/bench_e2e.py --schemes bf16 w8a8 w4a4 --frames 1 10 20 40 --warmup 2 --iters 5 \
    --json "$OUT/e2e.json"
fi
(cd "$OUT" && find . -name '*.json*' -o -name '*.log' | tar czf results.tar.gz -T - && find . \( -name '*.json*' -o -name '*.log' \) -delete)
