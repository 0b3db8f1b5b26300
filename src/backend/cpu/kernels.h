// CPU kernels behind CpuBackend (backend_cpu.cpp), fp32 activations, one op family per file.
// Each has a plain reference twin in namespace sft::cpu::ref (reference.cpp) that the op tests
// compare against; fast versions use OpenMP and AVX-512 where the CPU has it (run-time check).
// Shapes use the letters of backend/backend.h; qkv rows have stride QKV = (NH + 2*NKV) * HS.
#pragma once
#include <cstdint>

#include "backend/backend.h"

#define SFT_CPU_KERNELS                                                                           \
  void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N,          \
                         int64_t C);                                                              \
  void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N,       \
                          int64_t C);                                                             \
  void rms_norm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N,       \
                        int64_t C, float eps);                                                    \
  void residual_rms_norm_forward(float* res, float* out, float* rstd, const float* x, const float* y, \
                                 const float* w, int64_t N, int64_t C, float eps);                \
  void rms_norm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, \
                         const float* rstd, int64_t N, int64_t C);                                \
  void rope_forward(float* qkv, const int32_t* positions, const float* cos, const float* sin,     \
                    int64_t N, int NH, int NKV, int HS);                                          \
  void rope_backward(float* dqkv, const int32_t* positions, const float* cos, const float* sin,   \
                     int64_t N, int NH, int NKV, int HS);                                         \
  void attention_forward(float* out, float* lse, const float* qkv, const SeqLayout& seqs, int NH, \
                         int NKV, int HS);                                                        \
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,     \
                          const float* lse, const SeqLayout& seqs, int NH, int NKV, int HS);      \
  void swiglu_forward(float* out, const float* gu, int64_t N, int64_t FF);                        \
  void swiglu_backward(float* dgu, const float* dout, const float* gu, int64_t N, int64_t FF);    \
  void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets,          \
                             int64_t N, int64_t V);                                               \
  void cross_entropy_forward_backward(float* losses, float* logits, const int32_t* targets,       \
                                      int64_t N, int64_t V, float dloss_scale);                   \
  void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n,                 \
                  const AdamWParams& p);                                                          \
  double sum_squares(const float* x, int64_t n);

namespace sft::cpu {
SFT_CPU_KERNELS
// cross_entropy_forward_backward with dlogits rounded to bf16 into dlogits16 (N, V), logits left
// unchanged: bit-identical to rounding that kernel's fp32 dlogits (tested against it).
void cross_entropy_forward_backward_bf16(float* losses, const float* logits, const int32_t* targets, int64_t N,
                                         int64_t V, float dloss_scale, uint16_t* dlogits16);
}  // namespace sft::cpu

namespace sft::cpu::ref {
SFT_CPU_KERNELS
}  // namespace sft::cpu::ref

namespace sft::cpu {
// bf16 AMX FlashAttention (attention_amx.cpp): same contract as attention_forward/backward, tile
// products in bf16 with fp32 accumulation. Only where attention_amx_usable(HS): the CPU has usable
// AMX-BF16 tiles (cpu_features().amx_usable()), HS % 32 == 0, and neither SFT_CPU_ISA=generic
// nor SFT_ATTENTION=fp32 is set.
bool attention_amx_usable(int HS);
void attention_forward_amx(float* out, float* lse, const float* qkv, const SeqLayout& seqs, int NH,
                           int NKV, int HS);
void attention_backward_amx(float* dqkv, const float* dout, const float* qkv, const float* out,
                            const float* lse, const SeqLayout& seqs, int NH, int NKV, int HS);
}  // namespace sft::cpu
