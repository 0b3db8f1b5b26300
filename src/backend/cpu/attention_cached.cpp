// Attention over a KV cache for generation (prefill and one-token decode): each query row attends
// causally to the cached rows before it. Plain and exact (scores per query row, max-subtracted
// softmax in fp32); generation is a few tokens at a time, so this is not on a training hot path.
// The test compares it with the FlashAttention kernel on the same rows.
#include <cmath>
#include <vector>

#include "backend/cpu/backend_cpu.h"

namespace sft {

void CpuBackend::attention_forward_cached(Tensor out, Tensor qkv_cache, int64_t start, int64_t n, int NH,
                                          int NKV, int HS) {
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
  SFT_ASSERT(qkv_cache.dim(-1) == QKV && start + n <= qkv_cache.dim(0) && out.numel() == n * NH * HS);
  const float* cache = qkv_cache.f32();
  float* o = out.f32();
  const float scale = 1.0f / std::sqrt(float(HS));
  const int group = NH / NKV;
#pragma omp parallel
  {
    std::vector<float> scores(size_t(start + n));
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; ++i)
      for (int h = 0; h < NH; ++h) {
        const int64_t row = start + i;
        const float* q = cache + row * QKV + int64_t(h) * HS;
        const int64_t k_off = int64_t(NH + h / group) * HS, v_off = int64_t(NH + NKV + h / group) * HS;
        float mx = -INFINITY;
        for (int64_t j = 0; j <= row; ++j) {
          const float* k = cache + j * QKV + k_off;
          float s = 0.0f;
          for (int d = 0; d < HS; ++d) s += q[d] * k[d];
          scores[size_t(j)] = s * scale;
          mx = std::max(mx, scores[size_t(j)]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j <= row; ++j) sum += scores[size_t(j)] = std::exp(scores[size_t(j)] - mx);
        float* y = o + i * NH * HS + int64_t(h) * HS;
        for (int d = 0; d < HS; ++d) y[d] = 0.0f;
        for (int64_t j = 0; j <= row; ++j) {
          const float p = scores[size_t(j)] / sum;
          const float* v = cache + j * QKV + v_off;
          for (int d = 0; d < HS; ++d) y[d] += p * v[d];
        }
      }
  }
}

}  // namespace sft
