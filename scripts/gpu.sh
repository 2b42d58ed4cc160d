#!/usr/bin/env bash
# Measurements on a GPU machine (NVIDIA H100/H200 with a Vulkan ICD but no Vulkan loader, no
# registry access). Everything it needs is carried in .devcarry/ from the developer machine.
#   scripts/gpu.sh prepare   here: the lopa binary (.devcarry/lopa.xz), the data, the real weights in
#                            three parts (.devcarry/p/A.*); the Vulkan loader .debs go in .devcarry/debs
#   scripts/gpu.sh bench     there: `lopa bench-train` (burn on wgpu, random weights of SmolLM2-135M's
#                            shape; VARIANTS=lopa lopa-vulkan) and scripts/lib/torch_reference.py
#   scripts/gpu.sh tune      there: the same under each burn runtime setting in $SETTINGS
#   scripts/gpu.sh park      there: keep a carried weights part (the first two calls)
#   scripts/gpu.sh benchmark there, with the last part, data, binary and debs: the accuracy report's
#                            runs (scripts/lib/benchmark.py --backend wgpu --jobs N); writes
#                            $OUT/runs.tar.xz and $OUT/bench.log. DEADLINE=400 HARD=545 fit one call.
# Calls follow each other within the machine's idle time, or the parked parts are gone.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
W=/tmp/lopa-gpu; mkdir -p "$W"

# The Vulkan loader next to the driver's ICD, and a record of the GPU.
setup() {
  for d in .devcarry/debs/*.deb; do dpkg -x "$d" /; done; ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export XDG_RUNTIME_DIR=$(mktemp -d); chmod 700 "$XDG_RUNTIME_DIR"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
}

# bench_train NAME BINARY [ENV...]: one `lopa bench-train` at batch 32 x 256 tokens.
bench_train() {
  local name="$1" bin="$2"; shift 2
  env "$@" timeout "${BURN_TIMEOUT:-300}" "$bin" bench-train --backend auto --batch-size "${B:-32}" --seq-len "${S:-256}" \
    --steps 5 --warmup 3 --layers "${LAYERS:-30}" >"$OUT/burn-$name.json" 2>"$OUT/burn-$name.log"
  echo "$name rc $? $(cat "$OUT/burn-$name.json")"
}

torch_reference() { # NAME [ARGS...]
  local name="$1"; shift
  timeout 120 python3 scripts/lib/torch_reference.py --batch-size "${B:-32}" --seq-len "${S:-256}" --steps 5 "$@" >"$OUT/$name.json" 2>>"$OUT/torch.log"
  echo "$name rc $? $(cat "$OUT/$name.json")"
}

case "${1:-}" in
  prepare)
    source scripts/lib/common.sh
    S=$(mktemp -d)
    mkdir -p "$S/w/cache/weights" .devcarry/p .devcarry/data
    cp -r "$LOPA_CACHE/weights/smollm2-135m-instruct" "$S/w/cache/weights/"
    # MiniLM in f16 (44 MiB instead of 87): the browser bundle's precision, so that it all fits in 3 calls.
    [ -x "$LOPA_CACHE/venv/bin/python" ] || python3 -m venv "$LOPA_CACHE/venv"
    "$LOPA_CACHE/venv/bin/python" -c "import numpy, safetensors" 2>/dev/null || "$LOPA_CACHE/venv/bin/pip" install -q numpy safetensors
    "$LOPA_CACHE/venv/bin/python" - "$LOPA_CACHE/weights/all-minilm-l6-v2" "$S/w/cache/weights/all-minilm-l6-v2" <<'PY'
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
    build_lopa && strip -o .devcarry/lopa "$LOPA" && xz -f -6 .devcarry/lopa
    ls .devcarry/debs/*.deb >/dev/null 2>&1 || echo "also needed: the Vulkan loader .debs in .devcarry/debs (apt-get download libvulkan1 libglvnd0 libgl1 libglx0 libegl1 libgles2 libopengl0 libx11-6 libxext6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0)"
    ;;
  bench)
    setup
    for v in ${VARIANTS:-lopa}; do
      [ -f ".devcarry/$v.xz" ] || continue
      xz -dc ".devcarry/$v.xz" >"/tmp/$v" && chmod +x "/tmp/$v"
      bench_train "$v" "/tmp/$v"
    done
    torch_reference torch
    torch_reference torch-eager --attn eager
    ;;
  tune)
    setup
    xz -dc .devcarry/lopa.xz >/tmp/lopa && chmod +x /tmp/lopa
    for s in ${SETTINGS:-default CUBECL_WGPU_MAX_TASKS=128 CUBECL_AUTOTUNE_LEVEL=full}; do
      if [ "$s" = default ]; then bench_train default /tmp/lopa; else bench_train "$(echo "$s" | tr '=' '-')" /tmp/lopa "$s"; fi
    done
    torch_reference torch
    ;;
  park)
    mv .devcarry/p/A.* "$W"/ && ls -la "$W"
    ;;
  benchmark)
    mv .devcarry/p/A.* "$W"/ 2>/dev/null
    cat "$W"/A.0 "$W"/A.1 "$W"/A.2 >"$W/A.tar" && tar -x -C "$W" -f "$W/A.tar" || exit 1
    echo "weights tar sha256 $(sha256sum "$W/A.tar" | cut -c1-64) (expected ${A_SHA:-?})"
    setup
    mkdir -p /tmp/t/debug && xz -dc .devcarry/lopa.xz >/tmp/t/debug/lopa && chmod +x /tmp/t/debug/lopa || exit 1
    export LOPA_CACHE="$W/w/cache" LOPA_DATA="$PWD/.devcarry/data" PYTHONUNBUFFERED=1
    python3 scripts/lib/benchmark.py --budget "${BUDGET:-full}" --backend wgpu --jobs "${JOBS:-8}" --seeds ${SEEDS:-42 43 44} \
      --deadline "${DEADLINE:-360}" --lopa /tmp/t/debug/lopa --out runs/bench --docs "$W/docs" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1 &
    py=$!
    for _ in $(seq "${HARD:-540}"); do kill -0 $py 2>/dev/null || break; sleep 1; done
    kill $py 2>/dev/null; pkill -f /tmp/t/debug/lopa; sleep 1
    tar -cJf "$OUT/runs.tar.xz" --exclude='best' --exclude='last' --exclude='peft' runs/bench/"${BUDGET:-full}"
    nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
    grep -c . "$OUT/bench.log"; tail -30 "$OUT/bench.log"
    find runs/bench -name summary.json | wc -l
    ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
