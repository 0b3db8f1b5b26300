// FlashAttention forward and backward on the GPU (Dao 2023, FlashAttention-2, Alg. 1 and 2): causal,
// GQA, variable-length packed rows; tiled online softmax, so no N×N or T×T score matrix exists.
// Same math as the CPU kernels (backend/cpu/attention.cpp) and their reference (cpu/reference.cpp):
// scale 1/sqrt(HS), causal within each sequence and never across, kv head = h / (NH/NKV).
// Kernels in attention_forward.cu and attention_backward.cu (device helpers: attention_tiles.cuh),
// host-side checks in attention.cpp.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace sft::cuda {

// qkv (N, QKV) fp32 device memory, QKV = (NH + 2*NKV)*HS; each token row = q heads | k heads | v heads
// (after RoPE). cu_seqlens (S+1) int32 device memory: sequence s is tokens [cu_seqlens[s],
// cu_seqlens[s+1]) (non-decreasing, empty sequences allowed); max_seqlen must be >= every length.
// out (N, NH*HS) fp32 ; lse (N, NH) fp32 = logsumexp of the scaled scores, saved for the backward.
// Rows of out/lse outside every sequence are left untouched.
// bf16_operands: q, k, v (and dout in the backward) are rounded to bf16 when loaded; with HS 64 or
// 128 the tile products run on tensor cores (bf16 in, fp32 accumulate, P and dS rounded to bf16 as
// in FlashAttention-2), other HS use the fp32 FMA kernels on the rounded operands.
// HS: any multiple of 8 up to 256 (64 and 128 have dedicated instantiations). Enqueued on stream;
// argument and launch errors throw sft::Error naming the op.
void flash_attention_forward(float* out, float* lse, const float* qkv, const int32_t* cu_seqlens,
                             int num_seqs, int max_seqlen, int64_t N, int NH, int NKV, int HS,
                             bool bf16_operands, cudaStream_t stream);

// dqkv (N, QKV) written: q, k and v parts of every row (zero outside sequences). dout (N, NH*HS),
// out and lse as produced by flash_attention_forward with the same bf16_operands. workspace:
// device memory of flash_attention_backward_workspace_bytes(...) bytes, used as scratch. dq is
// accumulated with fp32 atomics, so its last bits may vary run to run; dk and dv are deterministic.
void flash_attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                              const float* lse, const int32_t* cu_seqlens, int num_seqs,
                              int max_seqlen, int64_t N, int NH, int NKV, int HS,
                              bool bf16_operands, float* workspace, cudaStream_t stream);
size_t flash_attention_backward_workspace_bytes(int64_t N, int NH, int NKV, int HS);

// Internal: host checks shared by attention_forward.cu and attention_backward.cu (attention.cpp).
// They throw sft::Error naming op.
namespace attn {
void check_args(const char* op, int num_seqs, int max_seqlen, int64_t N, int NH, int NKV, int HS);
void check_ptr(const char* op, const char* name, const void* p, size_t align);  // non-null, aligned
void set_smem(const char* op, const void* kernel, size_t bytes);  // raise the dynamic smem limit
}  // namespace attn

}  // namespace sft::cuda
