// AVX-512 Σ x² over one block in double: 16 floats per step widened to two 8-double halves and
// summed into eight independent accumulators (the FMA latency chain of one accumulator bounded
// the plain loop at a third of memory bandwidth), added in a fixed order at the end, so a block's
// sum does not depend on the thread that runs it. Called after a run-time AVX-512 check.
#include <immintrin.h>

#include <cstdint>

namespace sft::cpu::detail {

// GCC 12's _mm512_cvtps_pd reads _mm512_undefined_pd() and warns about it
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
double sum_squares_block_avx512(const float* x, int64_t n) {
  __m512d acc[8];
  for (auto& a : acc) a = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int k = 0; k < 4; ++k) {
      const __m512 v = _mm512_loadu_ps(x + i + 16 * k);
      const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
      const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
      acc[2 * k] = _mm512_fmadd_pd(lo, lo, acc[2 * k]);
      acc[2 * k + 1] = _mm512_fmadd_pd(hi, hi, acc[2 * k + 1]);
    }
  for (; i + 8 <= n; i += 8) {
    const __m512d d = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
    acc[0] = _mm512_fmadd_pd(d, d, acc[0]);
  }
  for (int k = 1; k < 8; ++k) acc[0] = _mm512_add_pd(acc[0], acc[k]);
  double s = _mm512_reduce_add_pd(acc[0]);
  for (; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}
#pragma GCC diagnostic pop

}  // namespace sft::cpu::detail
