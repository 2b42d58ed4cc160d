#!/usr/bin/env bash
# Runtime settings of burn's wgpu backend against training throughput, on the GPU machine: the
# same `lopa bench-train` as scripts/gpu-bench.sh (batch 32, sequence 256, SmolLM2-135M's shape)
# under each setting in $SETTINGS (space-separated; `default` = no variable), then the PyTorch
# reference on the same GPU. Same carried files as scripts/gpu-bench.sh; writes into $OUT.
set -uo pipefail
source "$(dirname "$0")/gpu-setup.sh"
xz -dc .devcarry/lopa.xz > /tmp/lopa && chmod +x /tmp/lopa
for s in ${SETTINGS:-default CUBECL_WGPU_MAX_TASKS=128 CUBECL_AUTOTUNE_LEVEL=full}; do
  name=$(echo "$s" | tr '=' '-')
  if [ "$s" = default ]; then envs=(); else envs=("$s"); fi
  env "${envs[@]}" timeout "${BURN_TIMEOUT:-150}" /tmp/lopa bench-train --backend auto --batch-size 32 --seq-len 256 --steps 5 --warmup 3 \
    > "$OUT/burn-$name.json" 2> "$OUT/burn-$name.log"; echo "$s rc $? $(cat "$OUT/burn-$name.json")"
done
timeout 120 python3 scripts/torch_reference.py --batch-size 32 --seq-len 256 --steps 5 > "$OUT/torch.json" 2> "$OUT/torch.log"; echo "torch rc $? $(cat "$OUT/torch.json")"
