#!/usr/bin/env bash
# The README's longer LoPA run on SST-2: 8,000 training examples, one epoch, otherwise the
# settings of scripts/sst2-compare.sh. Writes runs/sst2-lopa-8k/. Extra flags go to `lopa train`
# (e.g. `--epochs 2 --resume` adds a second epoch to a finished run).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lopa/target}"
scripts/fetch-weights.sh >/dev/null
cargo build --locked --features full --bin lopa
start=$(date +%s)
"$CARGO_TARGET_DIR/debug/lopa" train --task sst2 --method lopa --train-limit 8000 --epochs 1 --batch-size 16 \
  --lr 1e-3 --seed 42 --backend "${BACKEND:-cpu}" --run-dir runs/sst2-lopa-8k "$@" > /dev/null
echo "{\"wall_seconds\":$(( $(date +%s) - start ))}" > runs/sst2-lopa-8k/wall.json
cat runs/sst2-lopa-8k/summary.json
