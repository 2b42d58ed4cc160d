#!/usr/bin/env bash
# Sourced by the GPU machine scripts (gpu-bench.sh, gpu-tune.sh): unpack the carried Vulkan loader
# .debs (the machine has the NVIDIA ICD but no loader), point Vulkan at the ICD, and record the GPU.
OUT="${OUT:-/tmp/gpu-bench}"; mkdir -p "$OUT"
for d in .devcarry/debs/*.deb; do dpkg -x "$d" / ; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export XDG_RUNTIME_DIR=$(mktemp -d); chmod 700 "$XDG_RUNTIME_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
