#!/usr/bin/env bash
# Build the npm package in pkg/: the crate for wasm32 (feature `browser`), wasm-bindgen's ES
# module glue into pkg/wasm/, then wasm-opt from npm's binaryen (Debian's binaryen 108 emits a
# module that fails to load). Installs the wasm32 target and the matching wasm-bindgen-cli when
# missing. Prints the sizes and writes them to pkg/wasm/sizes.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lopa/target}"
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/[^0-9.]/,""); print}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
  # --locked fails for this crate (a locked dependency was yanked); the version is pinned anyway.
  cargo install wasm-bindgen-cli --version "$want"
fi
[ -x tests/browser/node_modules/.bin/wasm-opt ] || (cd tests/browser && npm ci --no-audit --no-fund >/dev/null)
cargo build --locked --target wasm32-unknown-unknown --lib --no-default-features --features browser --profile wasm
raw="$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm/lopa.wasm"
rm -rf pkg/wasm
wasm-bindgen --target web --out-dir pkg/wasm --out-name lopa "$raw"
before=$(stat -c %s pkg/wasm/lopa_bg.wasm)
# -O3 rather than -Oz: the CPU backend's kernels are the latency budget; -Oz saves little more.
tests/browser/node_modules/.bin/wasm-opt -O3 pkg/wasm/lopa_bg.wasm -o pkg/wasm/lopa_bg.opt.wasm
mv pkg/wasm/lopa_bg.opt.wasm pkg/wasm/lopa_bg.wasm
after=$(stat -c %s pkg/wasm/lopa_bg.wasm)
gz=$(gzip -9 -c pkg/wasm/lopa_bg.wasm | wc -c)
printf '{"wasm_bindgen_bytes":%s,"wasm_opt_bytes":%s,"gzip_bytes":%s}\n' "$before" "$after" "$gz" | tee pkg/wasm/sizes.json
