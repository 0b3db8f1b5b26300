// AVX512-BF16 bulk f32 -> bf16 conversion (vcvtneps2bf16 rounds to nearest even, like torch).
// Compiled with AVX-512 flags (see CMakeLists.txt); called only after a run-time CPU check.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace sft::detail {

void convert_f32_to_bf16_avx512(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), reinterpret_cast<__m256i&>(v));
  }
  if (i < n) {
    __mmask16 m = __mmask16((1u << (n - i)) - 1);
    __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
    _mm256_mask_storeu_epi16(dst + i, m, reinterpret_cast<__m256i&>(v));
  }
}

}  // namespace sft::detail
