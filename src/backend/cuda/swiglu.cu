// SwiGLU on the GPU, element-wise over gu (N, 2*FF) = [gate | up]: out = silu(gate) * up with
// silu(g) = g / (1 + e^-g); backward dgate = dout * up * σ(g) (1 + g (1 - σ(g))), dup = dout * silu(g).
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/launch.cuh"

namespace sft::cuda {

namespace {

__global__ void swiglu_forward_kernel(float* out, const float* gu, int64_t N, int64_t FF) {
  const int64_t total = N * FF;
  for (int64_t i = first_index(); i < total; i += grid_stride()) {
    const int64_t n = i / FF, f = i % FF;
    const float g = gu[n * 2 * FF + f], u = gu[n * 2 * FF + FF + f];
    out[i] = g / (1.0f + expf(-g)) * u;
  }
}

__global__ void swiglu_backward_kernel(float* dgu, const float* dout, const float* gu, int64_t N, int64_t FF) {
  const int64_t total = N * FF;
  for (int64_t i = first_index(); i < total; i += grid_stride()) {
    const int64_t n = i / FF, f = i % FF;
    const float g = gu[n * 2 * FF + f], u = gu[n * 2 * FF + FF + f], d = dout[i];
    const float sig = 1.0f / (1.0f + expf(-g));
    dgu[n * 2 * FF + f] = d * u * sig * (1.0f + g * (1.0f - sig));
    dgu[n * 2 * FF + FF + f] = d * g * sig;
  }
}

}  // namespace

void swiglu_forward(float* out, const float* gu, int64_t N, int64_t FF, cudaStream_t s) {
  if (N * FF == 0) return;
  swiglu_forward_kernel<<<grid_for(N * FF), kThreads, 0, s>>>(out, gu, N, FF);
  SFT_CUDA_LAUNCHED("swiglu_forward");
}

void swiglu_backward(float* dgu, const float* dout, const float* gu, int64_t N, int64_t FF, cudaStream_t s) {
  if (N * FF == 0) return;
  swiglu_backward_kernel<<<grid_for(N * FF), kThreads, 0, s>>>(dgu, dout, gu, N, FF);
  SFT_CUDA_LAUNCHED("swiglu_backward");
}

}  // namespace sft::cuda
