#!/usr/bin/env bash
# Measurements on a GPU machine (NVIDIA H100/H200 with a Vulkan ICD but no Vulkan loader, no
# registry access). Everything it needs is carried in .devcarry/ from the developer machine.
#   scripts/gpu.sh prepare   here: the lopa binary (.devcarry/lopa.xz: wgpu with WGSL kernels), the
#                            NVIDIA one (.devcarry/lopa-gpu.xz: CUDA, and wgpu with SPIR-V kernels),
#                            tests/cuda.rs's binary, CUDA's libdevice (pinned wheel), the data, the
#                            real weights in three parts (.devcarry/p/A.*); the Vulkan loader .debs
#                            go in .devcarry/debs
#   scripts/gpu.sh check     there: tests/cuda.rs on the GPU (bf16 and f16 training against f32)
#   scripts/gpu.sh bench     there: `lopa bench-train` (random weights of SmolLM2-135M's shape) for
#                            each of $VARIANTS (BINARY:BACKEND:PRECISION) and
#                            scripts/lib/torch_reference.py fp32 and bf16
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
  # CUDA's math library for kernels that call exp/log/tanh/erf (cubecl reads $CUDA_PATH/nvvm).
  export CUDA_PATH="$PWD/.devcarry/cuda"
}

# unpack NAME: a carried binary, decompressed to /tmp/NAME.
unpack() {
  [ -x "/tmp/$1" ] || { xz -dc ".devcarry/$1.xz" >"/tmp/$1.part" && chmod +x "/tmp/$1.part" && mv "/tmp/$1.part" "/tmp/$1"; }
}

# bench_train NAME BINARY BACKEND PRECISION [ENV...]: one `lopa bench-train` at batch 32 x 256 tokens.
bench_train() {
  local name="$1" bin="$2" backend="$3" precision="$4"; shift 4
  env "$@" timeout "${BURN_TIMEOUT:-120}" "$bin" bench-train --backend "$backend" --precision "$precision" --batch-size "${B:-32}" --seq-len "${S:-256}" \
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
    build_lopa_cuda && strip -o .devcarry/lopa-gpu "$LOPA_CUDA" && xz -f -6 .devcarry/lopa-gpu
    # tests/cuda.rs: its binary, and the paths compiled into it (the lopa binary, the fixtures).
    t=$(cuda_tests --no-run --message-format=json | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["name"] == "cuda"][-1])')
    strip -o .devcarry/cuda-test "$t" && xz -f -6 .devcarry/cuda-test
    printf 'BIN=%s\nMANIFEST=%s\n' "$LOPA_CUDA" "$PWD" >.devcarry/cuda-test.paths
    # libdevice.10.bc from NVIDIA's nvcc wheel on PyPI (pinned; only this 0.5 MB file travels).
    whl="$LOPA_CACHE/cuda/nvidia_cuda_nvcc_cu12-12.8.93-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl"
    [ -f "$whl" ] || pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 nvidia-cuda-nvcc-cu12==12.8.93 -d "$LOPA_CACHE/cuda"
    echo "2d6dc36fb7cb5ac9c0b8825bc13d193c35487a315664007287d0126531238011  $whl" | sha256sum -c --quiet || exit 1
    mkdir -p .devcarry/cuda/nvvm/libdevice
    unzip -p "$whl" nvidia/cuda_nvcc/nvvm/libdevice/libdevice.10.bc >.devcarry/cuda/nvvm/libdevice/libdevice.10.bc
    du -sh .devcarry/lopa.xz .devcarry/lopa-gpu.xz .devcarry/cuda-test.xz .devcarry/cuda
    # The Vulkan loader and the GL/X libraries it opens, which the GPU machine lacks.
    mkdir -p .devcarry/debs
    ls .devcarry/debs/*.deb >/dev/null 2>&1 || (cd .devcarry/debs && apt-get download -q libvulkan1 libglvnd0 libgl1 libglx0 libegl1 libgles2 libopengl0 libx11-6 libxext6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0)
    ;;
  check)
    setup
    unpack lopa-gpu && unpack cuda-test
    source .devcarry/cuda-test.paths
    # The paths compiled into the test binary: the lopa binary, and the fixtures under the checkout.
    install -D /tmp/lopa-gpu "$BIN"
    [ -e "$MANIFEST" ] || { mkdir -p "$(dirname "$MANIFEST")" && ln -s "$PWD" "$MANIFEST"; }
    timeout "${CHECK_TIMEOUT:-400}" /tmp/cuda-test --test-threads 1 --nocapture 2>&1 | tee "$OUT/cuda-test.log" | tail -30
    ;;
  bench)
    setup
    # WGSL (the default build), SPIR-V on Vulkan in f32 and f16 (tensor cores), CUDA in all three.
    for v in ${VARIANTS:-lopa:wgpu:f32 lopa-gpu:wgpu:f32 lopa-gpu:wgpu:f16 lopa-gpu:cuda:f32 lopa-gpu:cuda:f16 lopa-gpu:cuda:bf16}; do
      IFS=: read -r bin backend precision <<<"$v"
      [ -f ".devcarry/$bin.xz" ] || { echo "$v: .devcarry/$bin.xz missing"; continue; }
      unpack "$bin" && bench_train "$bin-$backend-$precision" "/tmp/$bin" "$backend" "$precision"
    done
    torch_reference torch
    torch_reference torch-bf16 --dtype bf16
    ;;
  tune)
    setup
    unpack lopa
    for s in ${SETTINGS:-default CUBECL_WGPU_MAX_TASKS=128 CUBECL_AUTOTUNE_LEVEL=full}; do
      if [ "$s" = default ]; then bench_train default /tmp/lopa wgpu f32; else bench_train "$(echo "$s" | tr '=' '-')" /tmp/lopa wgpu f32 "$s"; fi
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
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
