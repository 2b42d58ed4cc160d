#!/usr/bin/env bash
# Make sure a trained adapter exists, then export the browser's weight files (encoder bundle,
# tokenizer.json, adapters/*.safetensors, adapters.json) and print their folder. An optional second
# argument is export-web's --dtype (int8, the default; f16; f32); the folder of another dtype than
# int8 gets it as a suffix (web-ci-f32), so the two exports never overwrite each other.
# LOPA_WEB_DIR, when set, is the folder instead.
#   scripts/lib/web-models.sh demo   the demo's SST-2 adapter: runs/sst2-lopa-12k/best
#                                    (configs/sst2-long.json) if present, else runs/sst2-lopa/best
#                                    (configs/sst2-demo.json, trained here if missing, ~25 min on 2 cores)
#   scripts/lib/web-models.sh ci     a small SST-2 adapter for the browser tests (configs/browser-test.json,
#                                    once; cached in $LOPA_CACHE/adapters)
# Expects the lopa binary to be built.
source "$(dirname "$0")/common.sh"
dtype="${2:-int8}"
suffix=""
[ "$dtype" = int8 ] || suffix="-$dtype"
case "${1:-demo}" in
  ci)
    run="$LOPA_CACHE/adapters/sst2-ci"
    if [ ! -f "$run/best/adapter.json" ]; then
      echo "lopa: training the test adapter (once) into $run" >&2
      "$LOPA" train --config configs/browser-test.json --run-dir "$run" >/dev/null
    fi
    best="$run/best"
    out="${LOPA_WEB_DIR:-$LOPA_CACHE/web-ci$suffix}"
    ;;
  demo)
    best=runs/sst2-lopa-12k/best
    [ -f "$best/adapter.json" ] || best=runs/sst2-lopa/best
    [ -f "$best/adapter.json" ] || "$LOPA" train --config configs/sst2-demo.json >/dev/null
    out="${LOPA_WEB_DIR:-$LOPA_CACHE/web$suffix}"
    ;;
  *) echo "usage: scripts/lib/web-models.sh demo|ci" >&2; exit 2 ;;
esac
"$LOPA" export-web --out "$out" --adapter "sst2=$best" --dtype "$dtype"
echo "$out"
