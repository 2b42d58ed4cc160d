#!/usr/bin/env bash
# Build the npm package in pkg/: the crate for wasm32 three times, wasm-bindgen's ES module glue into
# pkg/wasm/, then wasm-opt from npm's binaryen (Debian's binaryen 108 emits a module that fails
# to load). Prints the sizes and writes them to pkg/wasm/sizes.json.
#   scripts/build-wasm.sh          the shipped modules (profile `wasm`: fat LTO, then wasm-opt)
#   scripts/build-wasm.sh --test   the same code for the browser tests (profile `wasm-test`: no
#                                  LTO, parallel codegen, no wasm-opt): minutes faster, not for size
#   scripts/build-wasm.sh --tools  only install what the build needs: the wasm32 target and
#                                  rust-src, the wasm-bindgen-cli matching Cargo.lock, npm's binaryen
#   scripts/build-wasm.sh --app    the Leptos example on lopa::web (examples/leptos-app) into its
#                                  dist/, for the browser tests
source "$(dirname "$0")/lib/common.sh"
# `cpu=$(build ...)` below: without this a failed cargo build inside the substitution is ignored and
# the stale modules in pkg/wasm are tested.
shopt -s inherit_errexit
mode="${1:-}"
tools() {
  rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  # The threaded module rebuilds std with atomics from the toolchain's own sources.
  rustup component list --installed 2>/dev/null | grep -q '^rust-src' || rustup component add rust-src
  local want
  want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/[^0-9.]/,""); print}' Cargo.lock)
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
    # --locked fails for this crate (a locked dependency was yanked); the version is pinned anyway.
    cargo install wasm-bindgen-cli --version "$want"
  fi
}
tools
[ "$mode" = --tools ] && exit 0
if [ "$mode" = --app ]; then
  # In a target dir of its own: a build that depends on lopa also writes lopa's cdylib
  # (`lopa.wasm`, without the package's exports) where the package's module build takes it from.
  # wasm SIMD on, as in the CPU module.
  app=examples/leptos-app dir="$CARGO_TARGET_DIR/wasm-leptos-app"
  CARGO_TARGET_DIR="$dir" CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128" \
    cargo build --locked --manifest-path "$app/Cargo.toml" --target wasm32-unknown-unknown --release
  raw="$dir/wasm32-unknown-unknown/release/lopa-leptos-app.wasm"
  rm -rf "$app/dist"
  wasm-bindgen --target web --no-typescript --out-dir "$app/dist" --out-name lopa_leptos_app "$raw"
  cp "$app/index.html" "$app/dist/"
  printf 'leptos-app: %s bytes\n' "$(stat -c %s "$app/dist/lopa_leptos_app_bg.wasm")"
  exit 0
fi
[ "$mode" = --test ] || npm_deps
profile=wasm
[ "$mode" = --test ] && profile=wasm-test
# Three modules: lopa_cpu (flex only: what every browser can run, and small), lopa_cpu_mt (the
# same on a thread pool, for cross-origin isolated pages) and lopa (WebGPU + CPU). The JS loads
# the WebGPU one only where navigator.gpu offers an adapter.
mkdir -p pkg/wasm
rm -rf pkg/wasm/snippets
opt=tests/browser/node_modules/.bin/wasm-opt
build() { # name, features, cargo opt-level, wasm-opt level, rustflags[, cargo's -Z flags]
  # Each module in its own target dir: their RUSTFLAGS differ, and one dir would rebuild both every
  # time. (One dir with the same flags for both saved 5 s of 11 min: their features differ, so
  # little is shared.)
  local dir="$CARGO_TARGET_DIR/wasm-$1" unstable=()
  # -Z flags on the stable toolchain: RUSTC_BOOTSTRAP lets it take them (the pinned toolchain
  # builds its own std from rust-src; no second toolchain to fetch).
  [ -n "${6:-}" ] && unstable=(RUSTC_BOOTSTRAP=1)
  env "${unstable[@]}" CARGO_TARGET_DIR="$dir" "CARGO_PROFILE_$(echo "$profile" | tr a-z- A-Z_)_OPT_LEVEL=$3" CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$5" \
    cargo build --locked --target wasm32-unknown-unknown --lib --no-default-features --features "$2" --profile "$profile" ${6:-}
  local raw="$dir/wasm32-unknown-unknown/$profile/lopa.wasm" out="$dir/pkg-$1-$profile"
  # wasm-bindgen + wasm-opt (minutes on the WebGPU module) only when the module's bytes changed;
  # their output is kept beside the build, so a clean clone with a warm cache skips them too.
  local sum
  sum=$(sha256sum "$raw" | cut -c1-64)
  if [ "$(cat "$out/raw.sha256" 2>/dev/null)" != "$sum" ] || ! [ -f "$out/$1.sizes" ]; then
    rm -rf "$out" && mkdir -p "$out"
    wasm-bindgen --target web --out-dir "$out" --out-name "$1" "$raw"
    if [ -d "$out/snippets" ]; then
      # wasm-bindgen-rayon's worker imports its module as `../../..`, the folder, which only a
      # bundler resolving a package.json can load; name the module's file instead, which static
      # pages and bundlers both resolve.
      local helper
      helper=$(find "$out/snippets" -name workerHelpers.js)
      grep -q "import('../../..')" "$helper" || { echo "build-wasm: $helper no longer imports '../../..'; check the thread pool's worker" >&2; exit 1; }
      sed -i "s|import('../../..')|import('../../../$1.js')|" "$helper"
    fi
    local before after gz
    before=$(stat -c %s "$out/$1_bg.wasm")
    if [ "$profile" = wasm ]; then
      "$opt" "$4" --strip-debug --strip-producers "$out/$1_bg.wasm" -o "$out/$1_bg.opt.wasm"
      mv "$out/$1_bg.opt.wasm" "$out/$1_bg.wasm"
    fi
    after=$(stat -c %s "$out/$1_bg.wasm")
    gz=$(gzip -9 -c "$out/$1_bg.wasm" | wc -c)
    printf '"%s":{"profile":"%s","wasm_bindgen_bytes":%s,"wasm_opt_bytes":%s,"gzip_bytes":%s}' "$1" "$profile" "$before" "$after" "$gz" >"$out/$1.sizes"
    echo "$sum" >"$out/raw.sha256"
  fi
  cp -p "$out/$1"* pkg/wasm/
  [ -d "$out/snippets" ] && cp -pr "$out/snippets" pkg/wasm/
  cat "$out/$1.sizes"
}
# The CPU module at opt-level 3 / -O3 with wasm SIMD (its kernels are the latency budget); the
# WebGPU module for size (its bulk is the kernel compiler, which runs once per kernel).
cpu=$(build lopa_cpu browser-simd 3 -O3 "-C target-feature=+simd128")
# The threaded CPU module: std rebuilt with atomics, the memory shared (so the pool's Web Workers
# instantiate the module on the same memory) and imported, its maximum declared (shared memory
# must have one: 4 GiB, what wasm32 addresses), and the TLS symbols that wasm-bindgen's thread
# transform needs exported (the linker drops them otherwise).
mt_flags="-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals -C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=4294967296"
for sym in __wasm_init_tls __tls_size __tls_align __tls_base; do mt_flags+=" -C link-arg=--export=$sym"; done
mt=$(build lopa_cpu_mt browser-threads 3 -O3 "$mt_flags" "-Zbuild-std=panic_abort,std")
gpu=$(build lopa browser-webgpu s -Oz "")
echo "{$cpu,$mt,$gpu}" | tee pkg/wasm/sizes.json
