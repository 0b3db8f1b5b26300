// AVX-512 bulk f32 -> bf16 conversion with the same integer rounding as f32_to_bf16() (round to
// nearest even, NaN kept quiet, denormals kept), so it is bit-identical to torch's conversion.
// vcvtneps2bf16 is not used: it flushes denormal inputs to zero. Compiled with AVX-512 flags
// (see CMakeLists.txt); called only after a run-time check for AVX512F + AVX512BW.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace sft::detail {

static inline __m256i round_to_bf16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i hi = _mm512_srli_epi32(u, 16);
  const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(r);
}

void convert_f32_to_bf16_avx512(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), round_to_bf16(_mm512_loadu_ps(src + i)));
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(dst + i, m, round_to_bf16(_mm512_maskz_loadu_ps(m, src + i)));
  }
}

}  // namespace sft::detail
