// Token embedding lookup (HF nn.Embedding): out (N, C) = wte[tokens], and its backward, a
// scatter-add into dwte (V, C). The backward splits the C columns across threads, so each thread
// owns whole columns, adds rows in token order (race-free, bit-identical to the reference) and no
// token sort is needed. Token ids are trusted here: the data loader validates them against V.
#include <algorithm>
#include <cstring>

#include "backend/cpu/kernels.h"

namespace sft::cpu {

void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N,
                       int64_t C) {
#pragma omp parallel for schedule(static) if (N * C > (1 << 15))
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(out + n * C, wte + int64_t(tokens[n]) * C, size_t(C) * sizeof(float));
}

void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C) {
  constexpr int64_t kCols = 64;  // column block per task: 4 cache lines of every row
  const int64_t blocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (N * C > (1 << 15))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kCols, c1 = std::min(C, c0 + kCols);
    for (int64_t n = 0; n < N; ++n) {
      float* d = dwte + int64_t(tokens[n]) * C;  // (C) row of dwte (V, C)
      const float* g = dout + n * C;              // (C) row of dout (N, C)
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) d[c] += g[c];
    }
  }
}

}  // namespace sft::cpu
