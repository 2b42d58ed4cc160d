#!/usr/bin/env bash
# Reproduces the README's SST-2 table: zero-shot, PT and LoPA with the same budget (same
# training subsample, epochs, batch size, learning rate, seed) on the frozen SmolLM2-135M-Instruct.
# Writes runs/sst2-{lopa,pt}/summary.json and runs/sst2-compare.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lopa/target}"
LIMIT="${LIMIT:-2000}" EPOCHS="${EPOCHS:-2}" BACKEND="${BACKEND:-cpu}"
scripts/fetch-weights.sh >/dev/null
cargo build --locked --features full --bin lopa
LOPA="$CARGO_TARGET_DIR/debug/lopa"
common=(--task sst2 --train-limit "$LIMIT" --epochs "$EPOCHS" --batch-size 16 --lr 1e-3 --seed 42 --backend "$BACKEND")
for method in lopa pt; do
  start=$(date +%s)
  extra=(); [ "$method" = lopa ] && extra=(--zero-shot)
  "$LOPA" train "${common[@]}" --method "$method" --run-dir "runs/sst2-$method" "${extra[@]}" > "runs-sst2-$method.log.json"
  echo "{\"method\":\"$method\",\"wall_seconds\":$(( $(date +%s) - start ))}" > "runs/sst2-$method/wall.json"
  rm -f "runs-sst2-$method.log.json"
done
python3 - <<'PY'
import json
rows = []
for m in ["lopa", "pt"]:
    s = json.load(open(f"runs/sst2-{m}/summary.json"))
    w = json.load(open(f"runs/sst2-{m}/wall.json"))
    rows.append({"method": m, "dev_accuracy": s["best_dev_accuracy"], "zero_shot": s["zero_shot_dev_accuracy"],
                 "trainable_parameters": s["trainable_parameters"], "train_examples": s["train_examples"],
                 "dev_examples": s["dev_examples"], "samples_per_sec": s["samples_per_sec"], "wall_seconds": w["wall_seconds"]})
json.dump(rows, open("runs/sst2-compare.json", "w"), indent=1)
print(json.dumps(rows, indent=1))
PY
