// RoPE on the GPU, rotate-half as HF apply_rotary_pos_emb: for each q and k head of a token and
// each i < HS/2, (a, b) = (x[i], x[i + HS/2]) -> (a cos - b sin, b cos + a sin) with cos, sin
// (P, HS/2) at the token's position. The backward applies the inverse rotation (angle -θ) to dqkv.
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/launch.cuh"

namespace sft::cuda {

namespace {

// One thread per (token, head, i); heads = NH + NKV (the v part is left alone).
__global__ void rope_kernel(float* qkv, const int32_t* positions, const float* cos, const float* sin, int64_t N,
                            int heads, int HS, int64_t QKV, float sign) {
  const int half = HS / 2;
  const int64_t per_token = int64_t(heads) * half, total = N * per_token;
  for (int64_t idx = first_index(); idx < total; idx += grid_stride()) {
    const int64_t n = idx / per_token;
    const int h = int((idx % per_token) / half), i = int(idx % half);
    float* x = qkv + n * QKV + int64_t(h) * HS;
    const int64_t t = int64_t(positions[n]) * half + i;
    const float c = cos[t], s = sign * sin[t];
    const float a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

void rope(float* qkv, const int32_t* positions, const float* cos, const float* sin, int64_t N, int NH, int NKV,
          int HS, float sign, cudaStream_t s, const char* op) {
  const int64_t total = N * (NH + NKV) * (HS / 2);
  if (total == 0) return;
  rope_kernel<<<grid_for(total), kThreads, 0, s>>>(qkv, positions, cos, sin, N, NH + NKV, HS,
                                                   int64_t(NH + 2 * NKV) * HS, sign);
  SFT_CUDA_LAUNCHED(op);
}

}  // namespace

void rope_forward(float* qkv, const int32_t* positions, const float* cos, const float* sin, int64_t N, int NH,
                  int NKV, int HS, cudaStream_t s) {
  rope(qkv, positions, cos, sin, N, NH, NKV, HS, 1.0f, s, "rope_forward");
}

void rope_backward(float* dqkv, const int32_t* positions, const float* cos, const float* sin, int64_t N, int NH,
                   int NKV, int HS, cudaStream_t s) {
  rope(dqkv, positions, cos, sin, N, NH, NKV, HS, -1.0f, s, "rope_backward");
}

}  // namespace sft::cuda
