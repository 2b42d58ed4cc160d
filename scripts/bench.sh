#!/usr/bin/env bash
# CPU benchmarks (criterion) for the README: soft-prompt generation and one decoder forward.
# Uses the dev profile (dependencies at opt-level 3) so that it shares the test build's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lopa/target}"
scripts/fetch-weights.sh >/dev/null
cargo bench --locked --features full --profile dev --bench lopa -- "$@"
