#!/usr/bin/env bash
# All seven methods end to end on synthetic TL;DR data with the MiniLM-L6 backbone, sized for
# a busy 2-core CPU (see docs/llm.md). Usage: bash llm/run_cpu_demo.sh [OUT] [SEED]
# Random batch order (--no-group-by-length) as when docs/llm.md's table was made.
set -euo pipefail
OUT=${1:-results/llm-cpu-demo}
SEED=${2:-0}
export HF_HUB_OFFLINE=1
# One thread: on a shared, busy 2-core machine two torch threads are slower than one.
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
[ -d "$OUT/data" ] || python -m llm.synth --out "$OUT/data" --seed 0
for m in global local shared shared-g shared-wu share-rep shared-a; do
  start=$(date +%s)
  nice -n 10 python llm/train.py --method "$m" --data "$OUT/data" --seed "$SEED" \
    --limit-per-worker 100 --eval-limit-per-worker 100 --epochs 2 --max-length 64 \
    --batch-size 8 --grad-accum 2 --lr 1e-3 --head-lr 1e-2 --out "$OUT/$m-s$SEED" --no-progress \
    --no-group-by-length \
    > "$OUT/$m-s$SEED.log" 2>&1
  echo "$m seed $SEED: $(( $(date +%s) - start )) s" | tee -a "$OUT/timings.txt"
done
python -m llm.evaluate "$OUT"/*-s*/ --out "$OUT/table.md"
