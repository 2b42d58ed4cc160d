#!/usr/bin/env bash
# The test command: sets up what is missing on a fresh machine, fetches the real weights into
# the cache, runs every Rust test, then the browser tests (scripts/browser-test.sh). CI (.ci/run) calls exactly this.
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
cargo test --locked --features full "$@" 2>&1
# The browser package and the demo in headless Chromium (skip with LOPA_SKIP_BROWSER=1).
if [ "${LOPA_SKIP_BROWSER:-0}" != 1 ]; then
  scripts/browser-test.sh
fi
