#!/usr/bin/env bash
# Train the demo's SST-2 adapter: fetch the weights, build, train LoPA on SST-2 (a subsample
# that fits a 2-core CPU in about half an hour) with SmolLM2-135M-Instruct frozen and MiniLM as
# the encoder, and print the summary. Pass extra `lopa train` flags to change anything.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lopa/target}"
scripts/fetch-weights.sh >/dev/null
# The dev profile compiles dependencies at opt-level 3 and shares the test build's cache, so the
# main job and the tests cost one burn build, not two.
cargo build --locked --features full --bin lopa
exec "$CARGO_TARGET_DIR/debug/lopa" train --task sst2 --method lopa --train-limit 2000 --dev-limit 872 \
  --epochs 2 --batch-size 16 --lr 1e-3 --zero-shot --run-dir runs/sst2-lopa "$@"
