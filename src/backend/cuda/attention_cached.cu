// Attention over a KV cache for generation on the GPU (prefill and one-token decode): query row
// start+i of head h attends causally to cache rows [0, start+i]. One block per (query, head);
// keys are taken in tiles of kTile: scores into shared memory, then an online-softmax update
// (running max m, running sum l, output accumulator rescaled by e^(m_old - m_new)), thread d
// owning output element d. Exact and simple; generation is not a training hot path.
#include "backend/cuda/check.h"
#include "backend/cuda/device/reduce.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/launch.cuh"

namespace sft::cuda {

namespace {

constexpr int kTile = 256;  // keys per tile; blockDim.x = kThreads >= HS

__global__ void attention_cached_kernel(float* out, const float* cache, int64_t start, int NH, int NKV, int HS,
                                        float scale) {
  extern __shared__ float q[];  // (HS)
  __shared__ float p[kTile];
  __shared__ float scratch[32];
  const int64_t i = blockIdx.x, row = start + i;
  const int h = blockIdx.y, kvh = h / (NH / NKV);
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
  const int64_t k_off = int64_t(NH + kvh) * HS, v_off = int64_t(NH + NKV + kvh) * HS;
  const int d = threadIdx.x;
  if (d < HS) q[d] = cache[row * QKV + int64_t(h) * HS + d];
  __syncthreads();
  float m = -INFINITY, l = 0.0f, acc = 0.0f;
  for (int64_t j0 = 0; j0 <= row; j0 += kTile) {
    const int jn = int(row + 1 - j0 < kTile ? row + 1 - j0 : kTile);
    float tile_max = -INFINITY;
    for (int t = threadIdx.x; t < jn; t += blockDim.x) {
      const float* k = cache + (j0 + t) * QKV + k_off;
      float s = 0.0f;
      for (int e = 0; e < HS; ++e) s += q[e] * k[e];
      p[t] = s * scale;
      tile_max = fmaxf(tile_max, p[t]);
    }
    const float m_new = fmaxf(m, block_max(tile_max, scratch));  // barrier: p is complete
    float tile_sum = 0.0f;
    for (int t = threadIdx.x; t < jn; t += blockDim.x) tile_sum += p[t] = expf(p[t] - m_new);
    tile_sum = block_sum(tile_sum, scratch);  // barrier: p holds the exponentials
    const float correction = expf(m - m_new);  // 0 on the first tile (m = -inf)
    l = l * correction + tile_sum;
    if (d < HS) {
      float a = 0.0f;
      for (int t = 0; t < jn; ++t) a += p[t] * cache[(j0 + t) * QKV + v_off + d];
      acc = acc * correction + a;
    }
    m = m_new;
    __syncthreads();  // p is rewritten by the next tile
  }
  if (d < HS) out[i * NH * HS + int64_t(h) * HS + d] = acc / l;
}

}  // namespace

void attention_forward_cached(float* out, const float* qkv_cache, int64_t start, int64_t n, int NH, int NKV,
                              int HS, cudaStream_t s) {
  if (n == 0) return;
  const dim3 grid{unsigned(n), unsigned(NH)};
  attention_cached_kernel<<<grid, kThreads, size_t(HS) * sizeof(float), s>>>(out, qkv_cache, start, NH, NKV, HS,
                                                                            1.0f / sqrtf(float(HS)));
  SFT_CUDA_LAUNCHED("attention_forward_cached");
}

}  // namespace sft::cuda
