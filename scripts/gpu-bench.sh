#!/usr/bin/env bash
# GPU throughput check run on the device machine (NVIDIA H100/H200, driver with a Vulkan ICD but
# no Vulkan loader): unpack the carried loader .debs, then time `lopa bench-train` (burn on wgpu,
# random weights of SmolLM2-135M's shape) and the PyTorch reference of the same LoPA setup.
# Expects .devcarry/{lopa.xz (WGSL build), lopa-vulkan.xz (optional, --features vulkan),
# debs/*.deb} made on the developer machine; writes into $OUT.
set -uo pipefail
source "$(dirname "$0")/gpu-setup.sh"
B="${B:-32}" S="${S:-256}"
for v in ${VARIANTS:-lopa}; do
  [ -f ".devcarry/$v.xz" ] || continue
  xz -dc ".devcarry/$v.xz" > "/tmp/$v" && chmod +x "/tmp/$v"
  timeout "${BURN_TIMEOUT:-300}" "/tmp/$v" bench-train --backend auto --batch-size "$B" --seq-len "$S" --steps 5 --warmup 3 \
    --layers "${LAYERS:-30}" --matmul > "$OUT/burn-$v.json" 2> "$OUT/burn-$v.log"; echo "$v rc $?"
done
if [ "${TORCH:-1}" = 1 ]; then
  timeout 120 python3 scripts/torch_reference.py --batch-size "$B" --seq-len "$S" --steps 5 --matmul > "$OUT/torch.json" 2> "$OUT/torch.log"; echo "torch rc $?"
  timeout 60 python3 scripts/torch_reference.py --batch-size "$B" --seq-len "$S" --steps 5 --attn eager > "$OUT/torch-eager.json" 2>> "$OUT/torch.log"; echo "torch eager rc $?"
fi
cat "$OUT"/*.json; for f in "$OUT"/burn-*.log; do echo "== $f"; tail -9 "$f"; done
