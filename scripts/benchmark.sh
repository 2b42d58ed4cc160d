#!/usr/bin/env bash
# Every measurement the docs quote, each writing its raw output to results/ (the docs are
# generated from there):
#   scripts/benchmark.sh accuracy [ARGS]  train and evaluate every method on every task and write
#                                         docs/RESULTS.md (scripts/lib/benchmark.py; --help for ARGS)
#   scripts/benchmark.sh cpu [ARGS]       criterion on the CPU: soft-prompt generation, one decoder forward
#   scripts/benchmark.sh serving          16 concurrent clients against the embedded engine, the gateway
#                                         + vLLM and vLLM alone; writes results/perf/load-bench.json,
#                                         docs/SCALING.md and the serving section of docs/PERFORMANCE.md
#   scripts/benchmark.sh browser [N]      soft-prompt latency in headless Chromium, N timed calls
#                                         (results/perf/browser-latency.json)
#   scripts/benchmark.sh cold             scripts/test.sh from a clean clone with empty caches (cargo's
#                                         registry, target dir, weights, vLLM, npm): results/perf/test-cold.tsv
# The GPU's: scripts/gpu.sh. The SST-2 runs: `lopa train --config configs/sst2-*.json`.
source "$(dirname "$0")/lib/common.sh"
what="${1:-}"; shift || true
case "$what" in
  accuracy)
    scripts/fetch-weights.sh >/dev/null
    build_lopa
    python3 scripts/lib/benchmark.py "$@"
    ;;
  cpu)
    scripts/fetch-weights.sh >/dev/null
    cargo bench --locked --features full --profile dev --bench lopa -- "$@"
    ;;
  serving)
    scripts/fetch-weights.sh >/dev/null
    build_lopa
    hf="$LOPA_CACHE/hf/smollm2-135m-instruct"
    [ -e "$hf/.ok" ] || { "$LOPA" export-hf --out "$hf" && touch "$hf/.ok"; }
    "$(scripts/vllm.sh install)/bin/python" scripts/lib/load-bench.py --lopa "$LOPA" --hf "$hf" --out results/perf/load-bench.json
    python3 scripts/lib/scaling.py
    ;;
  browser)
    build_lopa
    scripts/build-wasm.sh
    (cd tests/browser && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund >/dev/null; })
    LOPA_WEB_DIR="$(scripts/lib/web-models.sh ci | tail -1)" node tests/browser/bench.mjs "${1:-20}" --out results/perf/browser-latency.json
    ;;
  cold)
    tmp="$(mktemp -d /tmp/lopa-cold.XXXXXX)"
    git clone --quiet . "$tmp/lopa"
    # The clone reads ../shared/data like this checkout does.
    [ -e "$tmp/shared" ] || ln -s "$(cd .. && pwd)/shared" "$tmp/shared"
    start=$(date +%s)
    (
      export LOPA_CACHE="$tmp/cache" CARGO_HOME="$tmp/cargo" npm_config_cache="$tmp/npm" PIP_NO_CACHE_DIR=1
      export PATH="$tmp/cargo/bin:$PATH"
      unset CARGO_TARGET_DIR RUSTC_WORKSPACE_WRAPPER
      cd "$tmp/lopa" && CI=true scripts/test.sh
    ) 2>&1 | tee "$tmp/test.log"
    rc=${PIPESTATUS[0]}
    mkdir -p results/perf
    { echo "# scripts/benchmark.sh cold: rc $rc, $(( $(date +%s) - start )) s, $(nproc) cores, $(date -u +%F)"; cat "$tmp/cache/logs/test-times.tsv"; } >results/perf/test-cold.tsv
    cat results/perf/test-cold.tsv
    echo "lopa: the cold run's files are in $tmp (remove it when done)" >&2
    exit "$rc"
    ;;
  *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
