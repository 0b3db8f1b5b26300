// AVX-512 bulk f32 -> bf16 conversion with the same integer rounding as f32_to_bf16() (round to
// nearest even, NaN kept quiet, denormals kept), so it is bit-identical to torch's conversion.
// vcvtneps2bf16 is not used: it flushes denormal inputs to zero. Compiled with AVX-512 flags
// (see CMakeLists.txt); called only after a run-time check for AVX512F + AVX512BW.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "core/bf16_avx512.h"

namespace sft::detail {

using simd::bf16_16;
using simd::transpose16;

void convert_f32_to_bf16_avx512(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), bf16_16(_mm512_loadu_ps(src + i)));
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(dst + i, m, bf16_16(_mm512_maskz_loadu_ps(m, src + i)));
  }
}

// dst (cols, rows) rows [c0, c1) x columns [r0, r1) = src (rows, cols)ᵀ in bf16, in tiles of
// 32 rows x 16 columns: two 16x16 transposes of 32-bit lanes, so each destination row segment is
// one full 64-byte store (32 bf16) rather than two halves written at different times. Src float:
// rounded as f32_to_bf16; src bf16: widened exactly (bits << 16) and narrowed back unchanged.
template <class Src>
static void transpose_to_bf16(const Src* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                              int64_t c1, uint16_t* dst) {
  constexpr bool f32 = std::is_same_v<Src, float>;
  auto load = [](__mmask16 m, const Src* p) {
    if constexpr (f32) return _mm512_castps_si512(_mm512_maskz_loadu_ps(m, p));
    else return _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16);
  };
  auto pack = [](__m512i a, __m512i b) {
    if constexpr (f32) return simd::bf16_pack32(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b));
    else
      return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(_mm512_srli_epi32(a, 16))),
                                _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16)), 1);
  };
  __m512i v[16], w[16];
  // Destinations larger than the L2 caches are written with streaming stores (full aligned lines
  // skip the read for ownership: 2048x4096 in 2.1 instead of 4.6 ms on a 2-core Xeon); smaller
  // ones stay cached for the GEMM that reads them next (streaming made 2048x768 ten times slower).
  const bool stream = rows * cols * 2 > (int64_t(4) << 20);
  for (int64_t r = r0; r < r1; r += 32) {
    const int64_t nr = r1 - r < 32 ? r1 - r : 32;
    const __mmask32 rm = nr == 32 ? ~__mmask32(0) : __mmask32((1u << nr) - 1);
    for (int64_t c = c0; c < c1; c += 16) {
      const int64_t nc = c1 - c < 16 ? c1 - c : 16;
      const __mmask16 cm = __mmask16((1u << nc) - 1);
      for (int i = 0; i < 16; ++i) {
        v[i] = i < nr ? load(cm, src + (r + i) * cols + c) : _mm512_setzero_si512();
        w[i] = 16 + i < nr ? load(cm, src + (r + 16 + i) * cols + c) : _mm512_setzero_si512();
      }
      transpose16(v);
      transpose16(w);
      for (int j = 0; j < nc; ++j) {
        const __m512i row = pack(v[j], w[j]);
        uint16_t* out = dst + (c + j) * rows + r;
        if (stream && nr == 32 && (reinterpret_cast<uintptr_t>(out) & 63) == 0) _mm512_stream_si512(reinterpret_cast<__m512i*>(out), row);
        else _mm512_mask_storeu_epi16(out, rm, row);
      }
    }
  }
  _mm_sfence();  // streaming stores visible before the GEMM reads them
}

void transpose_f32_to_bf16_avx512(const float* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                                  int64_t c0, int64_t c1, uint16_t* dst) {
  transpose_to_bf16(src, rows, cols, r0, r1, c0, c1, dst);
}

void transpose_bf16_avx512(const uint16_t* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                           int64_t c1, uint16_t* dst) {
  transpose_to_bf16(src, rows, cols, r0, r1, c0, c1, dst);
}

}  // namespace sft::detail
