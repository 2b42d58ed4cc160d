# The prologue every script sources: the repository root as working directory, the caches outside
# the checkout, and the helpers the scripts share.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export LOPA_CACHE="${LOPA_CACHE:-$HOME/.cache/lopa}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LOPA_CACHE/target}"
# The CLI as the dev profile builds it (dependencies at opt-level 3). The test command uses the one
# its test build makes; `build_lopa` builds it alone, on the same compiled dependencies (Cargo.toml
# gives the plain build the test build's features), so after the tests only lopa itself compiles.
LOPA="$CARGO_TARGET_DIR/debug/lopa"
# The serving benchmarks measure what is deployed: the release build, with what serving needs (the
# CPU backend, no GPU stack). Its dependencies compile once into the same target dir's release/.
LOPA_RELEASE="$CARGO_TARGET_DIR/release/lopa"
SERVE_FEATURES="cli,server"

# need TOOL...: stop with what to install when a tool is missing.
need() {
  local tool
  for tool; do
    command -v "$tool" >/dev/null || { echo "lopa: $tool is required (cargo: https://rustup.rs; node: Node.js 18+)" >&2; exit 1; }
  done
}

# apt_install PACKAGE...: Debian packages, when running as root on Debian; otherwise says what to
# install and fails.
apt_install() {
  if ! { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }; then
    echo "lopa: install $* (Debian: apt-get install $*), or skip the tests that need them (LOPA_SKIP_WGPU=1, LOPA_SKIP_BROWSER=1)" >&2
    return 1
  fi
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# build_lopa: the `lopa` binary with everything the scripts use.
build_lopa() {
  cargo build --locked --features full --bin lopa
}

# build_lopa_release: `lopa` as the serving benchmarks run it.
build_lopa_release() {
  cargo build --locked --release --no-default-features --features "$SERVE_FEATURES" --bin lopa
}

# npm_deps: the browser tests' npm packages (playwright-core, binaryen, TypeScript; Vite and
# webpack for the bundler test), installed again whenever a package-lock.json changes.
npm_deps() {
  local d
  for d in tests/browser tests/bundlers; do
    (cd "$d" && { cmp -s package-lock.json node_modules/.lopa-lock 2>/dev/null || { npm ci --no-audit --no-fund >/dev/null && cp package-lock.json node_modules/.lopa-lock; }; }) || return 1
  done
}
