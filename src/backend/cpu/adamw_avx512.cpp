// AVX-512 AdamW over a flat range (adamw.cpp holds the scalars and the threading): the same fp32
// operations in the same order as the scalar loop, each rounded once (ew_exact_avx512.h), so the
// result is bit-identical to it. One pass: p, g, m, v read once, p, m, v written once.
#include "backend/cpu/ew_exact_avx512.h"

#include <cstdint>

namespace sft::cpu::detail {

// s = {decay, b1, 1-b1, b2, 1-b2, √bc2, eps, -lr/bc1, grad scale}; p, g, m, v (n)
void adamw_range_avx512(float* param, const float* grad, float* m, float* v, int64_t n,
                        const float* s) {
  const __m512 decay = _mm512_set1_ps(s[0]), b1 = _mm512_set1_ps(s[1]), one_b1 = _mm512_set1_ps(s[2]);
  const __m512 b2 = _mm512_set1_ps(s[3]), one_b2 = _mm512_set1_ps(s[4]);
  const __m512 bc2_sqrt = _mm512_set1_ps(s[5]), eps = _mm512_set1_ps(s[6]);
  const __m512 neg_step = _mm512_set1_ps(s[7]), gs = _mm512_set1_ps(s[8]);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = tail_mask(n - i);
    const __m512 g = mul_rn(_mm512_maskz_loadu_ps(k, grad + i), gs);
    const __m512 pi = mul_rn(_mm512_maskz_loadu_ps(k, param + i), decay);
    const __m512 mi = add_rn(mul_rn(_mm512_maskz_loadu_ps(k, m + i), b1), mul_rn(one_b1, g));
    const __m512 vi = add_rn(mul_rn(_mm512_maskz_loadu_ps(k, v + i), b2), mul_rn(mul_rn(one_b2, g), g));
    const __m512 denom = add_rn(div_rn(sqrt_rn(vi), bc2_sqrt), eps);
    _mm512_mask_storeu_ps(m + i, k, mi);
    _mm512_mask_storeu_ps(v + i, k, vi);
    _mm512_mask_storeu_ps(param + i, k, add_rn(pi, div_rn(mul_rn(neg_step, mi), denom)));
  }
}

}  // namespace sft::cpu::detail
