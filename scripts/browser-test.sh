#!/usr/bin/env bash
# The browser half of the tests (scripts/test.sh runs it after cargo test): builds pkg/, exports a
# small trained adapter, then runs in headless Chromium (Debian's /usr/bin/chromium, installed
# when missing) the package's parity/backend/error test and the demo's end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lopa/target}"
if ! command -v "${CHROMIUM:-chromium}" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "lopa: the browser tests need Chromium (Debian: apt-get install chromium) or set LOPA_SKIP_BROWSER=1" >&2; exit 1
  fi
fi
command -v node >/dev/null || { echo "lopa: the browser tests need Node.js 18+" >&2; exit 1; }
(cd tests/browser && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund >/dev/null; })
cargo build --locked --features full --bin lopa
scripts/build-wasm.sh
export LOPA_WEB_DIR="$(scripts/web-models.sh ci | tail -1)"
node tests/browser/soft_prompt.test.mjs
node tests/browser/demo.test.mjs
