// The element-wise work around the cuBLASLt GEMMs (matmul.cpp): rounding fp32 operands to bf16
// (round to nearest even, NaN kept, as torch's .to(bfloat16)) and widening bf16 weights back
// (exact), adding the bias after a linear forward, and the bias gradient Σ_n dout of a linear
// backward (column sums, atomicAdd per block).
#include <cuda_bf16.h>

#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/launch.cuh"

namespace sft::cuda {

namespace {

__global__ void f32_to_bf16_kernel(__nv_bfloat16* dst, const float* src, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) dst[i] = __float2bfloat16_rn(src[i]);
}

// Four elements per thread: one 16-byte load, one 8-byte store (src 16-byte aligned, n % 4 == 0).
__global__ void f32_to_bf16_x4_kernel(__nv_bfloat162* dst, const float4* src, int64_t n4) {
  for (int64_t i = first_index(); i < n4; i += grid_stride()) {
    const float4 v = src[i];
    dst[2 * i] = __floats2bfloat162_rn(v.x, v.y);
    dst[2 * i + 1] = __floats2bfloat162_rn(v.z, v.w);
  }
}

__global__ void bf16_to_f32_kernel(float* dst, const __nv_bfloat16* src, int64_t n) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) dst[i] = __bfloat162float(src[i]);
}

// out (N, OC) += bias (OC)
__global__ void add_bias_kernel(float* out, const float* bias, int64_t N, int64_t OC) {
  const int64_t total = N * OC;
  for (int64_t i = first_index(); i < total; i += grid_stride()) out[i] += bias[i % OC];
}

// dbias (OC) += Σ_n dout (N, OC): block (x, y) sums kRows rows of kThreads consecutive columns
// (coalesced along the row) and adds its partial sums atomically.
constexpr int64_t kRows = 64;
__global__ void bias_backward_kernel(float* dbias, const float* dout, int64_t N, int64_t OC) {
  const int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= OC) return;
  for (int64_t r0 = int64_t(blockIdx.y) * kRows; r0 < N; r0 += int64_t(gridDim.y) * kRows) {
    float s = 0.0f;
    const int64_t r1 = r0 + kRows < N ? r0 + kRows : N;
    for (int64_t r = r0; r < r1; ++r) s += dout[r * OC + o];
    atomicAdd(&dbias[o], s);
  }
}

}  // namespace

void f32_to_bf16(uint16_t* dst, const float* src, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  auto* out = reinterpret_cast<__nv_bfloat16*>(dst);
  if (reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 8 == 0 && n % 4 == 0)
    f32_to_bf16_x4_kernel<<<grid_for(n / 4), kThreads, 0, s>>>(reinterpret_cast<__nv_bfloat162*>(out),
                                                                reinterpret_cast<const float4*>(src), n / 4);
  else
    f32_to_bf16_kernel<<<grid_for(n), kThreads, 0, s>>>(out, src, n);
  SFT_CUDA_LAUNCHED("f32_to_bf16");
}

void bf16_to_f32(float* dst, const uint16_t* src, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  bf16_to_f32_kernel<<<grid_for(n), kThreads, 0, s>>>(dst, reinterpret_cast<const __nv_bfloat16*>(src), n);
  SFT_CUDA_LAUNCHED("bf16_to_f32");
}

void add_bias(float* out, const float* bias, int64_t N, int64_t OC, cudaStream_t s) {
  if (N * OC == 0) return;
  add_bias_kernel<<<grid_for(N * OC), kThreads, 0, s>>>(out, bias, N, OC);
  SFT_CUDA_LAUNCHED("linear_forward (bias)");
}

void bias_backward(float* dbias, const float* dout, int64_t N, int64_t OC, cudaStream_t s) {
  if (N * OC == 0) return;
  const dim3 grid{unsigned((OC + kThreads - 1) / kThreads), unsigned(std::min<int64_t>((N + kRows - 1) / kRows, 1024))};
  bias_backward_kernel<<<grid, kThreads, 0, s>>>(dbias, dout, N, OC);
  SFT_CUDA_LAUNCHED("linear_backward (bias)");
}

}  // namespace sft::cuda
