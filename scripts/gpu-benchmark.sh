#!/usr/bin/env bash
# The benchmark report's runs on a GPU machine: `scripts/benchmark.py --backend wgpu --jobs N`.
# The machine starts bare and takes at most 64 MiB per call, so the real weights (SmolLM2 GGUF
# 94 MiB + MiniLM 44 MiB in f16) travel as a tar in three parts: the first two calls only park
# theirs (`scripts/gpu-benchmark.sh park`), the third brings the last part with the data
# (.devcarry/data), the lopa binary (.devcarry/lopa.xz) and the Vulkan loader (.devcarry/debs).
# Writes $OUT/runs.tar.xz (every finished run's summary, metrics and log) and $OUT/bench.log.
set -uo pipefail
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
