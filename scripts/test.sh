#!/usr/bin/env bash
# The test command: sets up what is missing on a fresh machine, fetches the real weights into
# the cache, runs clippy (warnings fail), starts a real vLLM for the gateway tests
# (scripts/vllm.sh; installed into the cache the first time), runs every Rust test, then the
# browser tests (scripts/browser-test.sh).
# CI (.ci/run) calls exactly this. LOPA_SKIP_VLLM=1 skips the vLLM tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lopa/target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d /tmp/lopa-xdg.XXXXXX)}"
chmod 700 "$XDG_RUNTIME_DIR"
command -v cargo >/dev/null || { echo "lopa: cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "lopa: python3 is required (weights fetch, syntax check of generated code)" >&2; exit 1; }
# The wgpu test needs a Vulkan driver; without a GPU, Mesa's CPU driver (lavapipe) serves.
if [ "${LOPA_SKIP_WGPU:-0}" != 1 ] && ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  else
    echo "lopa: install Mesa's Vulkan drivers (Debian: mesa-vulkan-drivers) or set LOPA_SKIP_WGPU=1" >&2; exit 1
  fi
fi
scripts/fetch-weights.sh >/dev/null
# Lints are part of the tests: any clippy warning fails the run.
cargo clippy --locked --features full --all-targets -- -D warnings 2>&1
vllm_pid=""
cleanup() { [ -z "$vllm_pid" ] || kill -- "-$vllm_pid" 2>/dev/null || kill "$vllm_pid" 2>/dev/null || true; }
trap cleanup EXIT
if [ "${LOPA_SKIP_VLLM:-0}" != 1 ]; then
  # vLLM serves the default model exactly as lopa runs it (`lopa export-hf`); it starts in the
  # background while the tests compile.
  cargo build --locked --features full --bin lopa 2>&1
  hf="${LOPA_CACHE:-$HOME/.cache/lopa}/hf/smollm2-135m-instruct"
  if [ ! -e "$hf/.ok" ]; then
    "$CARGO_TARGET_DIR/debug/lopa" export-hf --out "$hf" && touch "$hf/.ok"
  fi
  scripts/vllm.sh install >/dev/null
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  scripts/vllm.sh serve "$hf" "$port" lopa-test >"$hf/../vllm.pid" &
  starter=$!
  cargo test --locked --features full --no-run "$@" 2>&1
  wait "$starter" || { echo "lopa: vLLM did not start" >&2; exit 1; }
  vllm_pid="$(cat "$hf/../vllm.pid")"
  export LOPA_TEST_VLLM="http://127.0.0.1:$port"
fi
cargo test --locked --features full "$@" 2>&1
# The browser package and the demo in headless Chromium (skip with LOPA_SKIP_BROWSER=1).
if [ "${LOPA_SKIP_BROWSER:-0}" != 1 ]; then
  scripts/browser-test.sh
fi
