#!/usr/bin/env bash
# The test command; CI's .ci/run calls exactly this. On a fresh machine it first sets up what is
# missing (network-bound steps run in the background while Rust compiles), then:
#   1. one native build of every test target, linted by clippy as it compiles (any warning fails);
#   2. the browser package (scripts/build-wasm.sh --test) and the Leptos example (--app) while
#      vLLM starts;
#   3. every Rust test, the gateway tests against that real vLLM;
#   4. the browser tests in headless Chromium: the package against the native library, its
#      TypeScript types against what it returns, personalisation in the browser against the
#      native loop, the demo end to end, the Leptos example on lopa::web, and the package installed
#      from `npm pack` into an app built with Vite and with webpack;
#   5. the NVIDIA build (scripts/build-cuda.sh: CUDA and SPIR-V; built in the background from
#      step 2 on) and its tests, which on a machine without a GPU check that `--backend cuda`
#      says in one line why it cannot run.
# LOPA_SKIP_VLLM=1, LOPA_SKIP_BROWSER=1, LOPA_SKIP_WGPU=1 and LOPA_SKIP_CUDA=1 skip those parts. Each step's wall
# time goes to $LOPA_CACHE/logs/test-times.tsv (docs/PERFORMANCE.md reads the cold run's).
source "$(dirname "$0")/lib/common.sh"
need cargo python3
skip() { [ "${1:-0}" = 1 ]; }
skip "${LOPA_SKIP_BROWSER:-0}" || need node
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d /tmp/lopa-xdg.XXXXXX)}"
chmod 700 "$XDG_RUNTIME_DIR"
mkdir -p "$LOPA_CACHE/logs"
times="$LOPA_CACHE/logs/test-times.tsv"
echo -e "step\tstart_s\tseconds" >"$times"
t0=$(date +%s)
# step NAME CMD...: run CMD and record its wall time. bg NAME CMD...: the same in the background
# (its output in $LOPA_CACHE/logs/NAME.log); await NAME waits for it and fails with its log.
step() {
  local name="$1" s; shift; s=$(date +%s)
  "$@"
  echo -e "$name\t$((s - t0))\t$(( $(date +%s) - s ))" >>"$times"
}
declare -A pids
bg() {
  local name="$1"; shift
  ( step "$name" "$@" ) >"$LOPA_CACHE/logs/$name.log" 2>&1 &
  pids[$name]=$!
}
await() {
  wait "${pids[$1]}" || { echo "lopa: $1 failed:" >&2; tail -30 "$LOPA_CACHE/logs/$1.log" >&2; exit 1; }
}

# Set-up. What is missing is installed; on a warm machine each of these returns at once.
debs=()
skip "${LOPA_SKIP_WGPU:-0}" || ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || debs+=(mesa-vulkan-drivers)
skip "${LOPA_SKIP_BROWSER:-0}" || command -v "${CHROMIUM:-chromium}" >/dev/null || debs+=(chromium)
# CruxEval-I's check and the sandbox tests run Python in bubblewrap.
command -v bwrap >/dev/null || debs+=(bubblewrap)
# The CUDA build links Debian's LLVM (scripts/lib/common.sh: cuda_env).
skip "${LOPA_SKIP_CUDA:-0}" || { [ -x /usr/lib/llvm-22/bin/llvm-config ] && [ -e /usr/lib/x86_64-linux-gnu/libzstd.so ]; } || debs+=(llvm-22-dev libzstd-dev)
if [ ${#debs[@]} -gt 0 ]; then
  bg apt apt_install "${debs[@]}"
fi
# The defaults, and the other families' real checkpoints that tests/real_arch.rs compares.
bg weights scripts/fetch-weights.sh qwen2.5-coder-0.5b gemma-3-270m
skip "${LOPA_SKIP_VLLM:-0}" || bg vllm-install scripts/vllm.sh install
if ! skip "${LOPA_SKIP_BROWSER:-0}"; then
  bg npm npm_deps
  bg wasm-tools scripts/build-wasm.sh --tools
fi

# 1. The native build, linted as it compiles: clippy-driver compiles lopa's own targets, plain
# rustc the dependencies, so they are built once for clippy, the tests and the CLI.
export RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
step build cargo test --locked --features full --all-targets --no-run 2>&1
[ -z "${pids[apt]:-}" ] || await apt
await weights
# The NVIDIA build (CUDA and SPIR-V), linted like the rest, in its own target dir (its burn has
# other features), and its tests; awaited at the end.
skip "${LOPA_SKIP_CUDA:-0}" || bg cuda cuda_tests

# 2. vLLM serves the default model exactly as lopa runs it (`lopa export-hf`); it starts while
# the browser package builds.
# vLLM runs in its own process group; its PID file appears once it answers.
pidfile="$LOPA_CACHE/logs/vllm.pid"
rm -f "$pidfile"
cleanup() {
  local pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [ -z "$pid" ] || kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
}
trap cleanup EXIT
if ! skip "${LOPA_SKIP_VLLM:-0}"; then
  hf="$LOPA_CACHE/hf/smollm2-135m-instruct"
  [ -e "$hf/.ok" ] || { "$LOPA" export-hf --out "$hf" && touch "$hf/.ok"; }
  await vllm-install
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  bg vllm-start bash -c "scripts/vllm.sh serve '$hf' $port lopa-test >'$pidfile.tmp' && mv '$pidfile.tmp' '$pidfile'"
  export LOPA_TEST_VLLM="http://127.0.0.1:$port"
fi
if ! skip "${LOPA_SKIP_BROWSER:-0}"; then
  await wasm-tools
  await npm
  step wasm scripts/build-wasm.sh --test
  step app scripts/build-wasm.sh --app
fi
skip "${LOPA_SKIP_VLLM:-0}" || await vllm-start

# 3. Every Rust test (already built).
step test cargo test --locked --features full 2>&1

# 4. The browser package and the demo in headless Chromium.
if ! skip "${LOPA_SKIP_BROWSER:-0}"; then
  web="$(step adapter scripts/lib/web-models.sh ci | tail -1)"
  # The same adapter as f32 files: personalisation is compared with the native loop at float
  # rounding (int8 files round activations to 16 bits, which AdamW amplifies; see the test).
  web32="$(env -u LOPA_WEB_DIR scripts/lib/web-models.sh ci f32 | tail -1)"
  export LOPA_WEB_DIR="$web"
  step browser bash -c "node tests/browser/soft_prompt.test.mjs && node tests/browser/threads.test.mjs && node tests/browser/types.test.mjs && LOPA_WEB_DIR='$web32' node tests/browser/personalize.test.mjs && node tests/browser/demo.test.mjs && node tests/browser/leptos_app.test.mjs"
  # The package from `npm pack` in an app built by Vite and by webpack.
  step bundlers node tests/browser/bundlers.test.mjs
fi
# 5. The NVIDIA build's tests (started after step 1: the steps between wait on vLLM, the browser
# and tests as much as on the cores).
skip "${LOPA_SKIP_CUDA:-0}" || await cuda
echo -e "total\t0\t$(( $(date +%s) - t0 ))" >>"$times"
column -t "$times" >&2
