#!/usr/bin/env bash
# The README's longest LoPA run on SST-2: 12,000 training examples, one epoch, linear learning-rate
# decay after warm-up, otherwise the settings of scripts/sst2-compare.sh. Writes $RUN_DIR
# (default runs/sst2-lopa-12k). Extra flags go to `lopa train` and override these; the earlier
# 8,000-example row is `RUN_DIR=runs/sst2-lopa-8k scripts/sst2-long.sh --train-limit 8000 --lr-schedule constant`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lopa/target}"
run="${RUN_DIR:-runs/sst2-lopa-12k}"
scripts/fetch-weights.sh >/dev/null
cargo build --locked --features full --bin lopa
start=$(date +%s)
"$CARGO_TARGET_DIR/debug/lopa" train --task sst2 --method lopa --train-limit 12000 --epochs 1 --batch-size 16 \
  --lr 1e-3 --lr-schedule linear --seed 42 --backend "${BACKEND:-cpu}" --run-dir "$run" "$@" > /dev/null
echo "{\"wall_seconds\":$(( $(date +%s) - start ))}" > "$run/wall.json"
cat "$run/summary.json"
