// AVX-512 rows of the cross-entropy kernels in cross_entropy.cpp: row max, Σ e^(x-max) in two
// 8-lane double accumulators, the in-place scaled softmax and its bf16 form. The vector exp is in
// simd_avx512.h. Called only after a run-time CPU check.
#include "backend/cpu/simd_avx512.h"
#include "core/bf16_avx512.h"

#include <cmath>
#include <cstdint>

namespace sft::cpu::detail {

// Horizontal max / sum (GCC 12's _mm512_reduce_* macros trip -Wuninitialized in its own headers).
static inline float hmax(__m512 v) {
  __m256 a = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 b = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  b = _mm_max_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_max_ss(b, _mm_movehdup_ps(b)));
}
static inline double hsum(__m512d v) {
  __m256d a = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
  __m128d b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
}

static float row_max(const float* x, int64_t V) {
  __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
  int64_t v = 0;
  for (; v + 32 <= V; v += 32) {
    m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + v));
    m1 = _mm512_max_ps(m1, _mm512_loadu_ps(x + v + 16));
  }
  for (; v < V; v += 16) m0 = _mm512_mask_max_ps(m0, tail_mask(V - v), m0, _mm512_maskz_loadu_ps(tail_mask(V - v), x + v));
  return hmax(_mm512_max_ps(m0, m1));
}

// Σ_v e^(x_v - m) in double; writes the exponentials back into x when store is set.
template <bool store>
static double sum_exp(float* x, int64_t V, float m) {
  const __m512 mv = _mm512_set1_ps(m);
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int64_t v = 0; v < V; v += 16) {
    const __mmask16 k = tail_mask(V - v);
    const __m512 e = _mm512_maskz_mov_ps(k, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + v), mv)));
    if (store) _mm512_mask_storeu_ps(x + v, k, e);
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
  }
  return hsum(_mm512_add_pd(s0, s1));
}

float ce_row_lse_avx512(const float* x, int64_t V) {
  const float m = row_max(x, V);
  return m + float(std::log(sum_exp<false>(const_cast<float*>(x), V, m)));
}

float ce_row_softmax_avx512(float* x, int64_t V, float scale) {
  const float m = row_max(x, V);
  const double sum = sum_exp<true>(x, V, m);
  const __m512 a = _mm512_set1_ps(float(scale / sum));
  for (int64_t v = 0; v < V; v += 16) {
    const __mmask16 k = tail_mask(V - v);
    _mm512_mask_storeu_ps(x + v, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + v), a));
  }
  return m + float(std::log(sum));
}

// The bf16 form: e^(x - max) into row (V, an L2 scratch: x is only read), then dlogits = e·a with
// the target's scale subtracted, rounded to bf16 (as f32_to_bf16) and streamed to out: the same
// fp32 values as ce_row_softmax_avx512 followed by the in-place subtraction.
float ce_row_softmax_bf16_avx512(const float* x, float* row, int64_t V, float scale, int32_t t, uint16_t* out) {
  const float m = row_max(x, V);
  const __m512 mv = _mm512_set1_ps(m);
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int64_t v = 0; v < V; v += 16) {
    const __mmask16 k = tail_mask(V - v);
    const __m512 e = _mm512_maskz_mov_ps(k, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + v), mv)));
    _mm512_mask_storeu_ps(row + v, k, e);
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
  }
  const double sum = hsum(_mm512_add_pd(s0, s1));
  const __m512 a = _mm512_set1_ps(float(scale / sum)), sv = _mm512_set1_ps(scale);
  const bool aligned = (reinterpret_cast<uintptr_t>(out) & 31) == 0;
  for (int64_t v = 0; v < V; v += 16) {
    const __mmask16 k = tail_mask(V - v);
    __m512 d = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, row + v), a);
    if (t >= v && t < v + 16) d = _mm512_mask_sub_ps(d, __mmask16(1u << (t - v)), d, sv);
    const __m256i h = simd::bf16_16(d);
    if (aligned && k == 0xffff) _mm256_stream_si256(reinterpret_cast<__m256i*>(out + v), h);
    else _mm256_mask_storeu_epi16(out + v, k, h);
  }
  return m + float(std::log(sum));
}

}  // namespace sft::cpu::detail
