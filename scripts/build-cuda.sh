#!/usr/bin/env bash
# Builds `lopa` for NVIDIA GPUs, with nothing downloaded outside the registries: CUDA
# (`--backend cuda`; Debian's LLVM 22 stands in for the LLVM bundle cubecl-cuda would download) and
# wgpu with SPIR-V kernels (`--backend wgpu` on Vulkan). Prints the binary's path. At run time CUDA
# needs the NVIDIA driver (libcuda.so.1) and, for kernels that call exp/log/tanh/erf, CUDA's
# libdevice.10.bc under $CUDA_PATH/nvvm/libdevice (scripts/gpu.sh carries it).
source "$(dirname "$0")/lib/common.sh"
need cargo
build_lopa_cuda >&2
echo "$LOPA_CUDA"
