// Reductions and scaling over flat fp32 buffers on the GPU: Σ x² accumulated in double (fixed
// grid of kReduceBlocks partial sums, then one block sums them: the same order every run) and
// x *= s.
#include "backend/cuda/check.h"
#include "backend/cuda/device/reduce.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/launch.cuh"

namespace sft::cuda {

namespace {

__global__ void sum_squares_partial_kernel(double* partials, const float* x, int64_t n) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = first_index(); i < n; i += grid_stride()) s += double(x[i]) * double(x[i]);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double* result, const double* partials, int count) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partials[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) *result = s;
}

__global__ void scale_kernel(float* x, int64_t n, float factor) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) x[i] *= factor;
}

}  // namespace

void sum_squares(double* result, double* partials, const float* x, int64_t n, cudaStream_t s) {
  sum_squares_partial_kernel<<<kReduceBlocks, kThreads, 0, s>>>(partials, x, n);
  SFT_CUDA_LAUNCHED("sum_squares");
  sum_partials_kernel<<<1, kThreads, 0, s>>>(result, partials, kReduceBlocks);
  SFT_CUDA_LAUNCHED("sum_squares");
}

void scale(float* x, int64_t n, float factor, cudaStream_t s) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n), kThreads, 0, s>>>(x, n, factor);
  SFT_CUDA_LAUNCHED("scale");
}

}  // namespace sft::cuda
