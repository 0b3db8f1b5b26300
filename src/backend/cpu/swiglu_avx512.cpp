// AVX-512 rows of the SwiGLU kernels in swiglu.cpp (16 lanes, masked tail); the vector exp is in
// simd_avx512.h. Compiled with AVX-512 flags; called only after a run-time CPU check.
#include "backend/cpu/simd_avx512.h"

#include <cstdint>

namespace sft::cpu::detail {

void swiglu_forward_row_avx512(float* out, const float* gate, const float* up, int64_t FF) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t f = 0; f < FF; f += 16) {
    const __mmask16 k = tail_mask(FF - f);
    const __m512 g = _mm512_maskz_loadu_ps(k, gate + f), u = _mm512_maskz_loadu_ps(k, up + f);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(out + f, k, _mm512_mul_ps(silu, u));
  }
}

void swiglu_backward_row_avx512(float* dgate, float* dup, const float* dout, const float* gate,
                                const float* up, int64_t FF) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t f = 0; f < FF; f += 16) {
    const __mmask16 k = tail_mask(FF - f);
    const __m512 g = _mm512_maskz_loadu_ps(k, gate + f), u = _mm512_maskz_loadu_ps(k, up + f);
    const __m512 d = _mm512_maskz_loadu_ps(k, dout + f);
    const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    const __m512 dsilu = _mm512_mul_ps(sig, _mm512_fmadd_ps(g, _mm512_sub_ps(one, sig), one));
    _mm512_mask_storeu_ps(dgate + f, k, _mm512_mul_ps(_mm512_mul_ps(d, u), dsilu));
    _mm512_mask_storeu_ps(dup + f, k, _mm512_mul_ps(d, _mm512_mul_ps(g, sig)));
  }
}

}  // namespace sft::cpu::detail
