// Launch geometry shared by the element-wise and row-wise kernels of the CUDA backend: 256-thread
// blocks and grid-stride loops over int64 indices, with the grid capped (large tensors loop).
#pragma once
#include <algorithm>
#include <cstdint>

namespace sft::cuda {

constexpr int kThreads = 256;

// Blocks for n independent items of work, at most max_blocks (the kernel loops over the rest).
inline unsigned grid_for(int64_t n, int threads = kThreads, int64_t max_blocks = int64_t(1) << 16) {
  return unsigned(std::clamp<int64_t>((n + threads - 1) / threads, 1, max_blocks));
}

// Grid-stride loops: for (int64_t i = first_index(); i < n; i += grid_stride()) { ... }
__device__ __forceinline__ int64_t first_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

}  // namespace sft::cuda
