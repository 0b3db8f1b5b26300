// AVX-512 row of the rotary embedding in rope.cpp: every q and k head of one token rotated by
// the token's (cos, sin) row, 16 lanes with a masked tail. Each product and sum is rounded once
// as in the scalar loop (ew_exact_avx512.h), so the result is bit-identical to it.
#include "backend/cpu/ew_exact_avx512.h"

#include <cstdint>

namespace sft::cpu::detail {

// x (heads, HS) in place; cr, sr (HS/2); sign = +1 forward, -1 backward (inverse rotation)
void rope_row_avx512(float* x, const float* cr, const float* sr, int heads, int HS, float sign) {
  const int half = HS / 2;
  const __m512 sg = _mm512_set1_ps(sign);
  for (int i = 0; i < half; i += 16) {
    const __mmask16 k = tail_mask(half - i);
    const __m512 c = _mm512_maskz_loadu_ps(k, cr + i);
    const __m512 s = mul_rn(sg, _mm512_maskz_loadu_ps(k, sr + i));
    for (int h = 0; h < heads; ++h) {
      float* xa = x + int64_t(h) * HS + i;  // first half of head h
      float* xb = xa + half;                // second half
      const __m512 a = _mm512_maskz_loadu_ps(k, xa), b = _mm512_maskz_loadu_ps(k, xb);
      _mm512_mask_storeu_ps(xa, k, sub_rn(mul_rn(a, c), mul_rn(b, s)));
      _mm512_mask_storeu_ps(xb, k, add_rn(mul_rn(b, c), mul_rn(a, s)));
    }
  }
}

}  // namespace sft::cpu::detail
