#!/usr/bin/env bash
# The benchmark report's runs on a GPU machine: `scripts/benchmark.py --backend wgpu --jobs N`.
# The machine starts bare and takes at most 64 MiB per call, so the real weights (SmolLM2 GGUF
# 94 MiB + MiniLM 44 MiB in f16) travel as a tar in three parts: the first two calls only park
# theirs (`scripts/gpu-benchmark.sh park`), the third brings the last part with the data
# (.devcarry/data), the lopa binary (.devcarry/lopa.xz) and the Vulkan loader (.devcarry/debs).
# Writes $OUT/runs.tar.xz (every finished run's summary, metrics and log) and $OUT/bench.log.
#
#   scripts/gpu-benchmark.sh prepare     # here: fill .devcarry (parts, data, binary; debs from gpu-bench)
#   device run, carry .devcarry/p/A.0:   scripts/gpu-benchmark.sh park
#   device run, carry .devcarry/p/A.1:   scripts/gpu-benchmark.sh park
#   device run, carry .devcarry/p/A.2 .devcarry/data .devcarry/debs .devcarry/lopa.xz [runs/bench/full]:
#                                        DEADLINE=400 HARD=545 scripts/gpu-benchmark.sh
# Calls follow each other within the machine's idle time (30 s), or the parked parts are gone.
set -uo pipefail
if [ "${1:-}" = prepare ]; then
  cd "$(dirname "$0")/.." && C="${LOPA_CACHE:-$HOME/.cache/lopa}" && S=$(mktemp -d) || exit 1
  mkdir -p "$S/w/cache/weights" .devcarry/p .devcarry/data
  cp -r "$C/weights/smollm2-135m-instruct" "$S/w/cache/weights/"
  # MiniLM in f16 (44 MiB instead of 87): the browser bundle's precision, so that it all fits in 3 calls.
  [ -x "$C/venv/bin/python" ] || python3 -m venv "$C/venv" || exit 1
  "$C/venv/bin/python" -c "import numpy, safetensors" 2>/dev/null || "$C/venv/bin/pip" install -q numpy safetensors || exit 1
  "$C/venv/bin/python" - "$C/weights/all-minilm-l6-v2" "$S/w/cache/weights/all-minilm-l6-v2" <<'PY' || exit 1
import numpy as np, shutil, sys
from safetensors.numpy import load_file, save_file
src, dst = sys.argv[1:]
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.bin", "onnx", "openvino"))
t = load_file(f"{src}/model.safetensors")
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in t.items()}, f"{dst}/model.safetensors")
PY
  tar -cf "$S/A.tar" -C "$S" w && rm -f .devcarry/p/A.* && split -b 60M -d -a1 "$S/A.tar" .devcarry/p/A.
  echo "A_SHA=$(sha256sum "$S/A.tar" | cut -c1-64)"; rm -rf "$S"
  for t in sst2 mrpc rte cruxeval; do cp -r "${LOPA_DATA:-../shared/data}/$t" .devcarry/data/; done
  T="${CARGO_TARGET_DIR:-$HOME/.cache/lopa/target}"
  cargo build --features full --bin lopa && strip -o .devcarry/lopa "$T/debug/lopa" && xz -f -6 .devcarry/lopa || exit 1
  ls .devcarry/debs/*.deb >/dev/null 2>&1 || echo "also needed: the Vulkan loader .debs in .devcarry/debs (see scripts/gpu-setup.sh)"
  exit
fi
W=/tmp/lopa-gpu; mkdir -p "$W"
if [ "${1:-}" = park ]; then mv .devcarry/p/A.* "$W"/ && ls -la "$W"; exit; fi
OUT="${OUT:-/tmp/gpu-out}"
mv .devcarry/p/A.* "$W"/ 2>/dev/null
cat "$W"/A.0 "$W"/A.1 "$W"/A.2 > "$W/A.tar" && tar -x -C "$W" -f "$W/A.tar" || exit 1
echo "weights tar sha256 $(sha256sum "$W/A.tar" | cut -c1-64) (expected ${A_SHA:-?})"
source "$(dirname "$0")/gpu-setup.sh"
mkdir -p /tmp/t/debug && xz -dc .devcarry/lopa.xz > /tmp/t/debug/lopa && chmod +x /tmp/t/debug/lopa || exit 1
export LOPA_CACHE="$W/w/cache" LOPA_DATA="$PWD/.devcarry/data" PYTHONUNBUFFERED=1
python3 scripts/benchmark.py --budget "${BUDGET:-full}" --backend wgpu --jobs "${JOBS:-8}" --seeds ${SEEDS:-42 43 44} \
  --deadline "${DEADLINE:-360}" --lopa /tmp/t/debug/lopa --out runs/bench --docs "$W/docs" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1 &
py=$!
for _ in $(seq "${HARD:-540}"); do kill -0 $py 2>/dev/null || break; sleep 1; done
kill $py 2>/dev/null; pkill -f /tmp/t/debug/lopa; sleep 1
tar -cJf "$OUT/runs.tar.xz" --exclude='best' --exclude='last' --exclude='peft' runs/bench/"${BUDGET:-full}"
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
grep -c . "$OUT/bench.log"; tail -30 "$OUT/bench.log"
find runs/bench -name summary.json | wc -l
