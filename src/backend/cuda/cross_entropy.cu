// Cross-entropy on the GPU in fp32, one block per row of logits (N, V): loss = lse - x[target]
// with lse = max + log Σ exp(x - max) (two passes over the row), 0 where target == -100. The fused
// backward then overwrites the row with (softmax - onehot(target)) * dloss_scale (zeros if ignored).
#include "backend/cuda/check.h"
#include "backend/cuda/device/reduce.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/launch.cuh"

namespace sft::cuda {

namespace {

constexpr int kRowThreads = 512;

template <bool kBackward>
__global__ void cross_entropy_kernel(float* losses, float* logits, const int32_t* targets, int64_t N, int64_t V,
                                     float dloss_scale) {
  __shared__ float scratch[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    float* x = logits + n * V;
    const int32_t t = targets[n];
    if (t == -100) {  // the same for the whole block
      if (threadIdx.x == 0) losses[n] = 0.0f;
      if (kBackward)
        for (int64_t v = threadIdx.x; v < V; v += blockDim.x) x[v] = 0.0f;
      continue;
    }
    const float xt = x[t];  // read by every thread before the reductions' barriers, so before any write
    float m = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, x[v]);
    m = block_max(m, scratch);
    float sum = 0.0f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += expf(x[v] - m);
    sum = block_sum(sum, scratch);
    const float lse = m + logf(sum);
    if (threadIdx.x == 0) losses[n] = lse - xt;
    if (kBackward)
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
        x[v] = (expf(x[v] - lse) - (v == t ? 1.0f : 0.0f)) * dloss_scale;
  }
}

unsigned row_grid(int64_t N) { return unsigned(std::clamp<int64_t>(N, 1, int64_t(1) << 20)); }

}  // namespace

void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           cudaStream_t s) {
  if (N == 0) return;
  // The forward-only instance never writes logits.
  cross_entropy_kernel<false><<<row_grid(N), kRowThreads, 0, s>>>(losses, const_cast<float*>(logits), targets, N,
                                                                  V, 1.0f);
  SFT_CUDA_LAUNCHED("cross_entropy_forward");
}

void cross_entropy_forward_backward(float* losses, float* logits, const int32_t* targets, int64_t N, int64_t V,
                                    float dloss_scale, cudaStream_t s) {
  if (N == 0) return;
  cross_entropy_kernel<true><<<row_grid(N), kRowThreads, 0, s>>>(losses, logits, targets, N, V, dloss_scale);
  SFT_CUDA_LAUNCHED("cross_entropy_forward_backward");
}

}  // namespace sft::cuda
