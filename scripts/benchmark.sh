#!/usr/bin/env bash
# Every measurement the docs quote, each writing its raw output to results/ (the docs are
# generated from there):
#   scripts/benchmark.sh accuracy [ARGS]  train and evaluate every method on every task and write
#                                         docs/RESULTS.md (scripts/lib/benchmark.py; --help for ARGS)
#   scripts/benchmark.sh code [ARGS]      CruxEval-O on Qwen2.5-Coder-0.5B-Instruct: zero-shot, PT, IDPG, LoPA
#                                         (scripts/lib/code_task.py; results/code/, docs/RESULTS.md)
#   scripts/benchmark.sh extraction       what a server learns of an adapter from N queries, with and without
#                                         a client-side defence (results/privacy/, docs/THREAT-MODEL.md, RESULTS.md)
#   scripts/benchmark.sh gradient-memory  peak RSS and time of a soft-prompt gradient by length against its
#                                         budget's estimate (results/perf/gradient-memory.json, docs/PERFORMANCE.md)
#   scripts/benchmark.sh gateway          criterion: the gateway's CPU time per request at d = 576 and 1,536
#                                         without vLLM (results/perf/gateway.json, docs/PERFORMANCE.md, SCALING.md)
#   scripts/benchmark.sh faults           the gateway under load while vLLM is killed and restarted
#                                         (results/perf/faults.json, docs/PERFORMANCE.md)
#   scripts/benchmark.sh soak [ARGS]      10 minutes at the concurrency limit, mixed routes, resident memory
#                                         (results/perf/soak.json, docs/PERFORMANCE.md)
#   scripts/benchmark.sh load-memory      peak RSS of loading Qwen2.5-Coder-1.5B at f32/bf16/f16 against the
#                                         weights' size (results/perf/load-memory.json, docs/PERFORMANCE.md)
#   scripts/benchmark.sh cpu [ARGS]       criterion on the CPU: soft-prompt generation, one decoder forward
#   scripts/benchmark.sh serving          16 concurrent clients against the embedded engine, the gateway
#                                         + vLLM and vLLM alone; writes results/perf/load-bench.json,
#                                         docs/SCALING.md and the serving section of docs/PERFORMANCE.md
#   scripts/benchmark.sh browser [N]      soft-prompt latency in headless Chromium, N timed calls
#                                         (results/perf/browser-latency.json)
#   scripts/benchmark.sh compare [N]      lopa's browser package beside transformers.js on the same MiniLM
#                                         weights (ONNX export by scripts/lib/export_onnx.py; f32 and
#                                         int8/q8), N timed calls per shape, then both threaded 8-bit ones
#                                         on one page, calls alternating: results/perf/browser-compare.json
#                                         and the side-by-side section of docs/PERFORMANCE.md
#   scripts/benchmark.sh personalize      a user with their own labelling rule (SST-2 flipped): 8/16/32
#                                         examples through `lopa personalize` against `lopa serve`,
#                                         accuracy before/after (results/personalize.json, docs/RESULTS.md)
#   scripts/benchmark.sh parity [ARGS]    the browser tests' parity checks on six freshly trained test
#                                         adapters (seeds 42, 1-4 and one step): results/perf/parity.json
#                                         (scripts/lib/parity.py; --help for ARGS)
#   scripts/benchmark.sh cold             scripts/test.sh from a clean clone with empty caches (cargo's
#                                         registry, target dir, weights, vLLM, npm), then once more warm:
#                                         results/perf/test-{cold,warm}.tsv and the build-times section
#                                         of docs/PERFORMANCE.md
# The serving measurements (serving, gradient-memory, gateway, faults, soak) run the release build.
# The GPU's: scripts/gpu.sh. The SST-2 runs: `lopa train --config configs/sst2-*.json`.
source "$(dirname "$0")/lib/common.sh"
what="${1:-}"; shift || true
case "$what" in
  load-memory)
    scripts/fetch-weights.sh qwen2.5-coder-1.5b >/dev/null
    [ -x "$LOPA" ] || build_lopa
    python3 scripts/lib/load_memory.py "$@" ;;
  extraction)
    scripts/vllm.sh install >/dev/null  # the venv with torch and transformers
    [ -f "$LOPA_CACHE/adapters/sst2-ci/best/adapter.json" ] || { [ -x "$LOPA" ] || build_lopa; "$LOPA" train --config configs/browser-test.json --run-dir "$LOPA_CACHE/adapters/sst2-ci" >/dev/null; }
    [ -e "$LOPA_CACHE/hf/smollm2-135m-instruct/.ok" ] || { [ -x "$LOPA" ] || build_lopa; "$LOPA" export-hf --out "$LOPA_CACHE/hf/smollm2-135m-instruct" && touch "$LOPA_CACHE/hf/smollm2-135m-instruct/.ok"; }
    "$LOPA_CACHE/vllm/bin/python" scripts/lib/extraction.py "$@" ;;
  gradient-memory)
    scripts/fetch-weights.sh >/dev/null
    build_lopa_release
    python3 scripts/lib/gradient_memory.py --lopa "$LOPA_RELEASE" "$@" ;;
  gateway)
    scripts/fetch-weights.sh >/dev/null
    cargo bench --locked --no-default-features --features "$SERVE_FEATURES" --bench gateway -- "$@"
    python3 scripts/lib/gateway_report.py ;;
  faults)
    scripts/fetch-weights.sh >/dev/null
    build_lopa_release
    hf="$LOPA_CACHE/hf/smollm2-135m-instruct"
    [ -e "$hf/.ok" ] || { "$LOPA_RELEASE" export-hf --out "$hf" && touch "$hf/.ok"; }
    scripts/vllm.sh install >/dev/null
    python3 scripts/lib/faults.py --lopa "$LOPA_RELEASE" --hf "$hf" "$@" ;;
  soak)
    scripts/fetch-weights.sh >/dev/null
    build_lopa_release
    python3 scripts/lib/soak.py --lopa "$LOPA_RELEASE" "$@" ;;
  code)
    scripts/fetch-weights.sh qwen2.5-coder-0.5b >/dev/null
    [ -x "$LOPA" ] || build_lopa
    python3 scripts/lib/code_task.py "$@" ;;
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
    build_lopa_release
    hf="$LOPA_CACHE/hf/smollm2-135m-instruct"
    [ -e "$hf/.ok" ] || { "$LOPA_RELEASE" export-hf --out "$hf" && touch "$hf/.ok"; }
    "$(scripts/vllm.sh install)/bin/python" scripts/lib/load-bench.py --lopa "$LOPA_RELEASE" --hf "$hf" --out results/perf/load-bench.json
    python3 scripts/lib/scaling.py
    ;;
  browser)
    build_lopa
    scripts/build-wasm.sh
    npm_deps
    LOPA_WEB_DIR="$(scripts/lib/web-models.sh ci | tail -1)" node tests/browser/bench.mjs "${1:-20}" --out results/perf/browser-latency.json
    ;;
  compare)
    scripts/fetch-weights.sh >/dev/null
    build_lopa
    scripts/build-wasm.sh
    npm_deps
    # torch, onnx and onnxruntime for the export, in their own venv (once; torch is ~3.5 GB).
    venv="$LOPA_CACHE/onnx-export"
    if [ ! -e "$venv/.ok" ]; then
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q torch==2.13.0 onnx==1.23.2 onnxruntime==1.32.0 onnxscript==0.7.2 transformers==5.24.0
      touch "$venv/.ok"
    fi
    onnx="$LOPA_CACHE/onnx/minilm"
    [ -e "$onnx/export.json" ] || "$venv/bin/python" scripts/lib/export_onnx.py "$LOPA_CACHE/weights/all-minilm-l6-v2" "$onnx"
    # The browser tests' exports: the same adapter as int8 and as f32 files.
    f32="$(env -u LOPA_WEB_DIR scripts/lib/web-models.sh ci f32 | tail -1)"
    int8="$(env -u LOPA_WEB_DIR scripts/lib/web-models.sh ci | tail -1)"
    (cd benches/browser && npm ci --ignore-scripts --no-audit --no-fund --silent)
    node benches/browser/compare.mjs --lopa-f32 "$f32" --lopa-int8 "$int8" --onnx "$onnx" --runs "${1:-20}" --out results/perf/browser-compare.json
    python3 scripts/lib/browser_compare.py
    ;;
  personalize)
    scripts/fetch-weights.sh >/dev/null
    build_lopa
    # The browser tests' SST-2 adapter (scripts/lib/web-models.sh ci trains it once).
    [ -f "$LOPA_CACHE/adapters/sst2-ci/best/adapter.json" ] || "$LOPA" train --config configs/browser-test.json --run-dir "$LOPA_CACHE/adapters/sst2-ci" >/dev/null
    scripts/build-wasm.sh --test
    npm_deps
    LOPA_WEB_DIR="$(env -u LOPA_WEB_DIR scripts/lib/web-models.sh ci f32 | tail -1)" node tests/browser/personalize.test.mjs --out results/perf/personalize-browser.json
    python3 scripts/lib/personalize_bench.py --lopa "$LOPA" --adapter "$LOPA_CACHE/adapters/sst2-ci/best" "$@"
    ;;
  parity)
    scripts/fetch-weights.sh >/dev/null
    build_lopa
    scripts/build-wasm.sh --test
    npm_deps
    python3 scripts/lib/parity.py --lopa "$LOPA" "$@"
    ;;
  cold)
    tmp="$(mktemp -d /tmp/lopa-cold.XXXXXX)"
    git clone --quiet . "$tmp/lopa"
    # The clone reads ../shared/data like this checkout does.
    [ -e "$tmp/shared" ] || ln -s "$(cd .. && pwd)/shared" "$tmp/shared"
    # The toolchain stays (rustup's proxies); what cargo installed on this machine does not.
    mkdir -p "$tmp/bin" results/perf
    rustup_bin="$(dirname "$(command -v rustup)")"
    for t in cargo rustc rustup clippy-driver cargo-clippy rustdoc; do ln -sf "$rustup_bin/$t" "$tmp/bin/$t"; done
    path="$tmp/cargo/bin:$tmp/bin:$(echo "$PATH" | tr ':' '\n' | grep -vx "$rustup_bin" | paste -sd:)"
    for run in cold warm; do
      (
        export LOPA_CACHE="$tmp/cache" CARGO_HOME="$tmp/cargo" npm_config_cache="$tmp/npm" PIP_NO_CACHE_DIR=1
        export PATH="$path"
        unset CARGO_TARGET_DIR RUSTC_WORKSPACE_WRAPPER
        cd "$tmp/lopa" && CI=true scripts/test.sh
        # Then the main job's build (scripts/run.sh): on the tests' dependencies, only lopa compiles.
        times="$LOPA_CACHE/logs/test-times.tsv" s=$(date +%s)
        CARGO_TARGET_DIR="$LOPA_CACHE/target" build_lopa
        echo -e "cli\t$(awk -F'\t' '$1 == "total" {print $3}' "$times")\t$(( $(date +%s) - s ))" >>"$times"
      ) >"$tmp/test-$run.log" 2>&1 || { echo "lopa: the $run run failed; see $tmp/test-$run.log" >&2; tail -30 "$tmp/test-$run.log" >&2; exit 1; }
      { echo "# $run: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(date -u +%F)"; cat "$tmp/cache/logs/test-times.tsv"; } >"results/perf/test-$run.tsv"
    done
    python3 scripts/lib/build_times.py
    echo "lopa: the runs' files are in $tmp (remove it when done)" >&2
    ;;
  *) awk 'NR > 1 && /^source /{exit} NR > 1' "$0" >&2; exit 2 ;;
esac
