// Fused AdamW on the GPU, element-wise, as torch.optim.AdamW's single-tensor path: decoupled decay
// p *= 1 - lr*wd, m = b1 m + (1-b1) g, v = b2 v + (1-b2) g², p += -lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
// Written with the _rn intrinsics so nvcc cannot contract into FMAs: the same fp32 operations in
// the same order as the CPU reference (backend/cpu/reference.cpp), hence the same bits. The
// variant for weights with a bf16 GEMM copy also writes the new value's bf16 rounding (nearest
// even, __float2bfloat16_rn as f32_to_bf16), so the copy is current without another pass over it.
#include <cuda_bf16.h>

#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/launch.cuh"

namespace sft::cuda {

namespace {

template <bool kBf16>
__global__ void adamw_kernel(float* param, __nv_bfloat16* param_bf16, const float* grad, float* m, float* v,
                             int64_t n, AdamWScalars a) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) {
    const float g = __fmul_rn(grad[i], a.grad_scale);
    const float p = __fmul_rn(param[i], a.decay);
    const float mi = __fadd_rn(__fmul_rn(m[i], a.beta1), __fmul_rn(a.one_minus_beta1, g));
    const float vi = __fadd_rn(__fmul_rn(v[i], a.beta2), __fmul_rn(__fmul_rn(a.one_minus_beta2, g), g));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bias_c2_sqrt), a.eps);
    const float pi = __fadd_rn(p, __fdiv_rn(__fmul_rn(a.neg_step_size, mi), denom));
    param[i] = pi;
    if constexpr (kBf16) param_bf16[i] = __float2bfloat16_rn(pi);
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWScalars& a,
                cudaStream_t s) {
  if (n == 0) return;
  adamw_kernel<false><<<grid_for(n), kThreads, 0, s>>>(param, nullptr, grad, m, v, n, a);
  SFT_CUDA_LAUNCHED("adamw_step");
}

void adamw_step_bf16(float* param, uint16_t* param_bf16, const float* grad, float* m, float* v, int64_t n,
                     const AdamWScalars& a, cudaStream_t s) {
  if (n == 0) return;
  adamw_kernel<true><<<grid_for(n), kThreads, 0, s>>>(param, reinterpret_cast<__nv_bfloat16*>(param_bf16), grad,
                                                       m, v, n, a);
  SFT_CUDA_LAUNCHED("adamw_step_bf16");
}

}  // namespace sft::cuda
