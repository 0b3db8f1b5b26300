// AVX-512 element-wise passes of the RMSNorm rows in rms_norm.cpp (the row sums stay there, in
// their lane order): each product and sum is rounded once as in the scalar loops
// (ew_exact_avx512.h), so the results are bit-identical to them.
#include "backend/cpu/ew_exact_avx512.h"

#include <cstdint>

namespace sft::cpu::detail {

// o (C) = (xr * r) * w
void rms_norm_scale_row_avx512(float* o, const float* xr, const float* w, int64_t C, float r) {
  const __m512 rv = _mm512_set1_ps(r);
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 k = tail_mask(C - c);
    const __m512 x = _mm512_maskz_loadu_ps(k, xr + c);
    _mm512_mask_storeu_ps(o + c, k, mul_rn(mul_rn(x, rv), _mm512_maskz_loadu_ps(k, w + c)));
  }
}

// d (C) += r (w g) - coef x ; pw (C) += g (x r)
void rms_norm_backward_row_avx512(float* d, float* pw, const float* g, const float* xr,
                                  const float* w, int64_t C, float r, float coef) {
  const __m512 rv = _mm512_set1_ps(r), cv = _mm512_set1_ps(coef);
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 k = tail_mask(C - c);
    const __m512 gv = _mm512_maskz_loadu_ps(k, g + c), x = _mm512_maskz_loadu_ps(k, xr + c);
    const __m512 wv = _mm512_maskz_loadu_ps(k, w + c);
    const __m512 upd = sub_rn(mul_rn(rv, mul_rn(wv, gv)), mul_rn(cv, x));
    _mm512_mask_storeu_ps(d + c, k, add_rn(_mm512_maskz_loadu_ps(k, d + c), upd));
    _mm512_mask_storeu_ps(pw + c, k, add_rn(_mm512_maskz_loadu_ps(k, pw + c), mul_rn(gv, mul_rn(x, rv))));
  }
}

}  // namespace sft::cpu::detail
