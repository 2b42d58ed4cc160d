#!/usr/bin/env bash
# Make sure trained adapters exist, then export the browser's weight files (f16 encoder bundle,
# tokenizer.json, adapters/*.safetensors, adapters.json) into $LOPA_WEB_DIR.
#   scripts/web-models.sh demo   the README's SST-2 adapter: runs/sst2-lopa-12k/best if present, else
#                                runs/sst2-lopa/best (scripts/train-sst2.sh, trained here if missing,
#                                ~25 min on 2 cores)
#   scripts/web-models.sh ci     a small SST-2 adapter for the browser tests (800 examples, 1 epoch,
#                                ~4 min once; cached in ~/.cache/lopa/adapters)
# Expects the lopa binary to be built (dev profile).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lopa/target}"
lopa="$CARGO_TARGET_DIR/debug/lopa"
mode="${1:-demo}"
case "$mode" in
  ci)
    run="$HOME/.cache/lopa/adapters/sst2-ci"
    if [ ! -f "$run/best/adapter.json" ]; then
      echo "lopa: training the test adapter (once) into $run" >&2
      "$lopa" train --task sst2 --method lopa --train-limit 800 --dev-limit 200 --epochs 1 --batch-size 16 \
        --lr 1e-3 --seed 42 --backend cpu --run-dir "$run" >/dev/null
    fi
    adapters=(--adapter "sst2=$run/best")
    out="${LOPA_WEB_DIR:-$HOME/.cache/lopa/web-ci}"
    ;;
  demo)
    # The best SST-2 adapter this checkout has trained (scripts/sst2-long.sh: 85.9 %), else the
    # demo's own (scripts/train-sst2.sh: 80.4 %), trained now if there is none.
    best=runs/sst2-lopa-12k/best
    [ -f "$best/adapter.json" ] || best=runs/sst2-lopa/best
    [ -f "$best/adapter.json" ] || scripts/train-sst2.sh >/dev/null
    adapters=(--adapter "sst2=$best")
    out="${LOPA_WEB_DIR:-$HOME/.cache/lopa/web}"
    ;;
  *) echo "usage: scripts/web-models.sh demo|ci" >&2; exit 2 ;;
esac
"$lopa" export-web --out "$out" "${adapters[@]}"
echo "$out"
