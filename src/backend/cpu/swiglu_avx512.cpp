// AVX-512 rows of the SwiGLU kernels in swiglu.cpp (16 lanes, masked tail), with a vector exp
// (Cephes expf: Cody-Waite reduction + degree-6 polynomial, about 1 ulp). Compiled with AVX-512
// flags; called only after a run-time CPU check.
#pragma GCC diagnostic push  // GCC 12 intrinsic headers warn about their own code (PR 105593)
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

namespace sft::cpu::detail {

// e^x: n = round(x·log2 e), r = x - n·ln2 in two parts, e^r by polynomial, scaled by 2^n.
// Inputs are clamped to [-104, 88.8] (results 0 and inf); NaN stays NaN.
static inline __m512 exp_ps(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(88.8f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

static inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
}

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
