// Token embedding on the GPU: out (N, C) = wte[tokens] (one block per token row, coalesced along
// C) and its backward dwte (V, C) += scatter(dout) with atomicAdd, so repeated tokens add up
// (in an unspecified order: fp32 sums of repeated rows may differ in the last bits run to run).
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/launch.cuh"

namespace sft::cuda {

namespace {

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* row = wte + int64_t(tokens[n]) * C;
    float* o = out + n * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = row[c];
  }
}

__global__ void embedding_backward_kernel(float* dwte, const float* dout, const int32_t* tokens, int64_t N,
                                          int64_t C) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    float* row = dwte + int64_t(tokens[n]) * C;
    const float* g = dout + n * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(&row[c], g[c]);
  }
}

unsigned row_grid(int64_t N) { return unsigned(std::clamp<int64_t>(N, 1, int64_t(1) << 20)); }

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C, cudaStream_t s) {
  if (N == 0) return;
  embedding_forward_kernel<<<row_grid(N), kThreads, 0, s>>>(out, tokens, wte, N, C);
  SFT_CUDA_LAUNCHED("embedding_forward");
}

void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int64_t C,
                        cudaStream_t s) {
  if (N == 0) return;
  embedding_backward_kernel<<<row_grid(N), kThreads, 0, s>>>(dwte, dout, tokens, N, C);
  SFT_CUDA_LAUNCHED("embedding_backward");
}

}  // namespace sft::cuda
