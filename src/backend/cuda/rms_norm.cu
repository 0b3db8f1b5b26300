// RMSNorm on the GPU (HF LlamaRMSNorm in fp32): one block per row; rstd = 1/sqrt(mean(x²) + eps),
// out = (x * rstd) * w. Backward: dx += rstd w dy - x rstd³/C Σ_c(dy w x) per row (block
// reduction), and dw += Σ_n dy x rstd, summed per block in shared memory over the block's rows
// (each column owned by one thread) and then added atomically, one add per block and column.
// The residual-fused forward (res = x + y, then the norm of res) is the same kernel body with the
// add in front, so it rounds exactly as the add followed by rms_norm_forward.
#include "backend/cuda/check.h"
#include "backend/cuda/device/reduce.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/launch.cuh"

namespace sft::cuda {

namespace {

// kResidual: the normalised rows are res (N, C) = x + y, written by the thread that owns each
// column before it reads them back (res may alias x or y); otherwise they are x itself.
template <bool kResidual>
__global__ void rms_norm_forward_kernel(float* res, float* out, float* rstd, const float* x, const float* y,
                                        const float* w, int64_t N, int64_t C, float eps) {
  __shared__ float scratch[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* xr = kResidual ? res + n * C : x + n * C;
    if constexpr (kResidual)
      for (int64_t c = threadIdx.x; c < C; c += blockDim.x) res[n * C + c] = __fadd_rn(x[n * C + c], y[n * C + c]);
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss, scratch);
    const float r = 1.0f / sqrtf(ss / float(C) + eps);
    if (threadIdx.x == 0) rstd[n] = r;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[n * C + c] = (xr[c] * r) * w[c];
  }
}

__global__ void rms_norm_backward_kernel(float* dx, float* dw, const float* dout, const float* x, const float* w,
                                         const float* rstd, int64_t N, int64_t C) {
  extern __shared__ float dw_part[];  // (C) this block's Σ over its rows of dy * x * rstd
  __shared__ float scratch[32];
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dw_part[c] = 0.0f;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* g = dout + n * C;
    const float* xr = x + n * C;
    const float r = rstd[n];
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += g[c] * w[c] * xr[c];
    dot = block_sum(dot, scratch);
    const float k = r * r * r * dot / float(C);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      dx[n * C + c] += r * w[c] * g[c] - xr[c] * k;
      dw_part[c] += g[c] * xr[c] * r;  // column c belongs to this thread in every row
    }
  }
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(&dw[c], dw_part[c]);
}

int sm_count() {
  int dev = 0, sms = 0;
  SFT_CUDA_CHECK("rms_norm_backward", cudaGetDevice(&dev));
  SFT_CUDA_CHECK("rms_norm_backward", cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

}  // namespace

void rms_norm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C, float eps,
                      cudaStream_t s) {
  if (N == 0) return;
  rms_norm_forward_kernel<false><<<unsigned(std::min<int64_t>(N, int64_t(1) << 20)), kThreads, 0, s>>>(
      nullptr, out, rstd, x, nullptr, w, N, C, eps);
  SFT_CUDA_LAUNCHED("rms_norm_forward");
}

void residual_rms_norm_forward(float* res, float* out, float* rstd, const float* x, const float* y, const float* w,
                               int64_t N, int64_t C, float eps, cudaStream_t s) {
  if (N == 0) return;
  rms_norm_forward_kernel<true><<<unsigned(std::min<int64_t>(N, int64_t(1) << 20)), kThreads, 0, s>>>(
      res, out, rstd, x, y, w, N, C, eps);
  SFT_CUDA_LAUNCHED("residual_rms_norm_forward");
}

void rms_norm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                       int64_t N, int64_t C, cudaStream_t s) {
  if (N == 0) return;
  const size_t smem = size_t(C) * sizeof(float);
  if (smem > 48 * 1024)  // beyond the default limit of dynamic shared memory: opt in
    SFT_CUDA_CHECK("rms_norm_backward", cudaFuncSetAttribute(rms_norm_backward_kernel,
                                                             cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  // Two blocks per multiprocessor: few enough that the dw atomics (blocks x C) stay cheap.
  const unsigned blocks = unsigned(std::min<int64_t>(N, 2 * int64_t(sm_count())));
  rms_norm_backward_kernel<<<blocks, kThreads, smem, s>>>(dx, dw, dout, x, w, rstd, N, C);
  SFT_CUDA_LAUNCHED("rms_norm_backward");
}

}  // namespace sft::cuda
