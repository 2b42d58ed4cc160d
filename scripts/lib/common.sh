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

# cuda_env: what building the `cuda` feature needs, offline. cubecl-cuda links LLVM (its NVPTX
# backend) through tracel-llvm-bundler, whose build script downloads an LLVM 23 bundle unless one
# is installed under $XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4. Debian's LLVM 22 takes its place:
# a folder with the bundler's "installed" marker and an llvm-config that answers for
# /usr/lib/llvm-22, asked for the libraries cubecl links (the NVPTX backend; the host's x86-64 one
# and ORC's JIT, which its CPU path references) instead of all of LLVM's (366 MB of archives), and
# with z3 named as a library (the bundler reads a path as a library name).
# CUDARC_CUDA_VERSION pins the driver API the bindings are generated for (12.8: driver 570 or later).
cuda_env() {
  { [ -x /usr/lib/llvm-22/bin/llvm-config ] && [ -e /usr/lib/x86_64-linux-gnu/libzstd.so ]; } || apt_install llvm-22-dev libzstd-dev || return 1
  local dir="$LOPA_CACHE/llvm/tracel/tracel-llvm-23.1.0-4"
  mkdir -p "$dir/bin"
  cat >"$dir/bin/llvm-config.tmp" <<'SH'
#!/bin/sh
# Debian's LLVM 22 in place of the bundle cubecl-llvm expects (scripts/lib/common.sh: cuda_env).
real=/usr/lib/llvm-22/bin/llvm-config
case " $* " in
  *" --libs "*) [ "$#" -le 2 ] && set -- "$@" nvptx x86 x86asmparser x86disassembler orcjit passes ipo bitreader bitwriter linker irreader ;;
esac
"$real" "$@" | sed 's#[^ ]*/libz3\.so#-lz3#g'
SH
  # The bundler's build script reruns when its marker changes, and then everything above it in the
  # graph rebuilds: the marker is touched only when this llvm-config changes (what it links).
  chmod +x "$dir/bin/llvm-config.tmp"
  if cmp -s "$dir/bin/llvm-config.tmp" "$dir/bin/llvm-config" && [ -e "$dir/.tracel-llvm-installed" ]; then
    rm "$dir/bin/llvm-config.tmp"
  else
    mv "$dir/bin/llvm-config.tmp" "$dir/bin/llvm-config" && touch "$dir/.tracel-llvm-installed"
  fi
  export XDG_DATA_HOME="$LOPA_CACHE/llvm" CUDARC_CUDA_VERSION=12080
}

# build_lopa_cuda: `lopa` for NVIDIA GPUs: CUDA (`--backend cuda`) and wgpu with SPIR-V kernels
# (`--backend wgpu`: Vulkan, tensor cores in f16), in its own target dir (its burn is built with
# other features, and its binary would replace the default build's).
# Built as the test build builds it (dev-dependencies unify features with it): a plain `cargo
# build` would compile burn a second time.
LOPA_CUDA="$LOPA_CACHE/target-cuda/debug/lopa"
CUDA_FEATURES="cli,cuda,vulkan"
build_lopa_cuda() {
  cuda_tests --no-run
}

# cuda_tests [ARGS...]: tests/cuda.rs on that build, and the binary it runs (`--no-run` builds them).
cuda_tests() {
  cuda_env && CARGO_TARGET_DIR="$LOPA_CACHE/target-cuda" cargo test --locked --no-default-features --features "$CUDA_FEATURES" --test cuda "$@"
}

# npm_deps: the browser tests' npm packages (playwright-core, binaryen, TypeScript; Vite and
# webpack for the bundler test), installed again whenever a package-lock.json changes.
npm_deps() {
  local d
  for d in tests/browser tests/bundlers; do
    (cd "$d" && { cmp -s package-lock.json node_modules/.lopa-lock 2>/dev/null || { npm ci --no-audit --no-fund >/dev/null && cp package-lock.json node_modules/.lopa-lock; }; }) || return 1
  done
}
