#!/usr/bin/env bash
# GPU throughput check run on the device machine (NVIDIA H100/H200, driver with a Vulkan ICD but
# no Vulkan loader): unpack the carried loader .debs, then time `lopa bench-train` (burn on wgpu,
# random weights of SmolLM2-135M's shape) and the PyTorch reference of the same LoPA setup.
# Expects .devcarry/{lopa.xz,debs/*.deb} made by the developer machine; writes into $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/gpu-bench}"; mkdir -p "$OUT"
for d in .devcarry/debs/*.deb; do dpkg -x "$d" / ; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export XDG_RUNTIME_DIR=$(mktemp -d); chmod 700 "$XDG_RUNTIME_DIR"
xz -dc .devcarry/lopa.xz > /tmp/lopa && chmod +x /tmp/lopa
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
B="${B:-32}" S="${S:-256}"
timeout 300 /tmp/lopa bench-train --backend auto --batch-size "$B" --seq-len "$S" --steps 5 --warmup 3 --matmul > "$OUT/burn.json" 2> "$OUT/burn.log"; echo "burn rc $?"
timeout 120 python3 scripts/torch_reference.py --batch-size "$B" --seq-len "$S" --steps 5 --matmul > "$OUT/torch.json" 2> "$OUT/torch.log"; echo "torch rc $?"
timeout 60 python3 scripts/torch_reference.py --batch-size "$B" --seq-len "$S" --steps 5 --attn eager > "$OUT/torch-eager.json" 2>> "$OUT/torch.log"; echo "torch eager rc $?"
cat "$OUT"/*.json; tail -12 "$OUT/burn.log"
