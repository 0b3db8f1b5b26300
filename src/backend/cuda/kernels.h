// CUDA kernels behind CudaBackend (backend_cuda.cpp), one op family per .cu file, each exported
// here as a launcher over device pointers that enqueues on the given stream. fp32 activations
// and the letters of backend/backend.h; qkv rows have stride QKV = (NH + 2*NKV) * HS. The backend
// checks shapes and host-side indices (tokens, targets, positions) before calling these.
// FlashAttention (training) is declared in attention.cuh.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace sft::cuda {

// ---- gemm_helpers.cu: operand rounding and bias terms around the cuBLASLt GEMMs ----
void f32_to_bf16(uint16_t* dst, const float* src, int64_t n, cudaStream_t s);  // round to nearest even
void bf16_to_f32(float* dst, const uint16_t* src, int64_t n, cudaStream_t s);   // exact
void add_bias(float* out, const float* bias, int64_t N, int64_t OC, cudaStream_t s);      // out (N, OC) += bias (OC)
void bias_backward(float* dbias, const float* dout, int64_t N, int64_t OC, cudaStream_t s);  // dbias (OC) += Σ_n dout

// ---- embedding.cu: out (N, C) = wte[tokens] ; dwte (V, C) += scatter(dout) (atomicAdd) ----
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C, cudaStream_t s);
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N, int64_t C,
                        cudaStream_t s);

// ---- rms_norm.cu: out (N, C) = x * rstd * w, rstd (N) ; dx (N, C) += ..., dw (C) += ... ----
void rms_norm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C, float eps,
                      cudaStream_t s);
// res (N, C) = x + y (res may alias x or y), then out and rstd as rms_norm_forward on res
void residual_rms_norm_forward(float* res, float* out, float* rstd, const float* x, const float* y, const float* w,
                               int64_t N, int64_t C, float eps, cudaStream_t s);
void rms_norm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                       int64_t N, int64_t C, cudaStream_t s);

// ---- rope.cu: rotate-half in place on the q and k heads of qkv (N, QKV); cos, sin (P, HS/2) ----
void rope_forward(float* qkv, const int32_t* positions, const float* cos, const float* sin, int64_t N, int NH,
                  int NKV, int HS, cudaStream_t s);
void rope_backward(float* dqkv, const int32_t* positions, const float* cos, const float* sin, int64_t N, int NH,
                   int NKV, int HS, cudaStream_t s);

// ---- swiglu.cu: gu (N, 2*FF) = [gate | up] ; out (N, FF) = silu(gate) * up ; dgu (N, 2*FF) = ----
void swiglu_forward(float* out, const float* gu, int64_t N, int64_t FF, cudaStream_t s);
void swiglu_backward(float* dgu, const float* dout, const float* gu, int64_t N, int64_t FF, cudaStream_t s);

// ---- cross_entropy.cu: logits (N, V), targets (N) with -100 = ignored, losses (N) ----
void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           cudaStream_t s);
// logits are overwritten with dlogits = (softmax - onehot) * dloss_scale (zero rows where ignored)
void cross_entropy_forward_backward(float* losses, float* logits, const int32_t* targets, int64_t N, int64_t V,
                                    float dloss_scale, cudaStream_t s);

// ---- adamw.cu: torch.optim.AdamW's update with the scalars precomputed on the host ----
struct AdamWScalars {
  float decay;          // 1 - lr * weight_decay
  float beta1, beta2, one_minus_beta1, one_minus_beta2;
  float neg_step_size;  // -lr / (1 - beta1^step)
  float bias_c2_sqrt;   // sqrt(1 - beta2^step)
  float eps;
  float grad_scale;  // g = grad · grad_scale (clipping), as AdamWParams
};
void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWScalars& a,
                cudaStream_t s);
// The same, and param_bf16 (n) = bf16(new param), rounded to nearest even as f32_to_bf16
void adamw_step_bf16(float* param, uint16_t* param_bf16, const float* grad, float* m, float* v, int64_t n,
                     const AdamWScalars& a, cudaStream_t s);

// ---- reduce.cu ----
constexpr int kReduceBlocks = 512;  // partial sums of sum_squares
// *result (device) = Σ x² in double; partials holds kReduceBlocks doubles
void sum_squares(double* result, double* partials, const float* x, int64_t n, cudaStream_t s);
void scale(float* x, int64_t n, float factor, cudaStream_t s);

// ---- attention_cached.cu: generation over a KV cache qkv_cache (P, QKV); out (n, NH*HS) ----
void attention_forward_cached(float* out, const float* qkv_cache, int64_t start, int64_t n, int NH, int NKV,
                              int HS, cudaStream_t s);

}  // namespace sft::cuda
