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

// GCC 12's own unpack/shuffle intrinsics read _mm512_undefined_* and warn about it
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
// 16x16 fp32 transpose in registers (unpack 32-bit pairs, then 64-bit pairs, then 128-bit lanes
// twice), each transposed row rounded to 16 bf16.
static inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  // r[4q + j] now holds, in each 128-bit lane L, column 4L + j of rows 4q..4q+3: gather lane L
  // of the four row groups into one register per column
  for (int j = 0; j < 4; ++j) {
    const __m512 a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), b = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
    const __m512 c = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88), d = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    t[j] = _mm512_shuffle_f32x4(a, c, 0x88);       // lane 0 of every row group
    t[4 + j] = _mm512_shuffle_f32x4(b, d, 0x88);   // lane 1
    t[8 + j] = _mm512_shuffle_f32x4(a, c, 0xdd);   // lane 2
    t[12 + j] = _mm512_shuffle_f32x4(b, d, 0xdd);  // lane 3
  }
  for (int k = 0; k < 16; ++k) r[k] = t[k];  // t[k] = column k of all 16 rows
}

// Tiles of 32 rows x 16 columns: two 16x16 transposes, so each destination row segment is one
// full 64-byte store (32 bf16) rather than two halves written at different times.
void transpose_f32_to_bf16_avx512(const float* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                                  int64_t c0, int64_t c1, uint16_t* dst, uint16_t* plain) {
  __m512 v[16], w[16];
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
        v[i] = i < nr ? _mm512_maskz_loadu_ps(cm, src + (r + i) * cols + c) : _mm512_setzero_ps();
        w[i] = 16 + i < nr ? _mm512_maskz_loadu_ps(cm, src + (r + 16 + i) * cols + c) : _mm512_setzero_ps();
      }
      if (plain)
        for (int i = 0; i < 16; ++i) {
          if (i < nr) _mm256_mask_storeu_epi16(plain + (r + i) * cols + c, cm, round_to_bf16(v[i]));
          if (16 + i < nr) _mm256_mask_storeu_epi16(plain + (r + 16 + i) * cols + c, cm, round_to_bf16(w[i]));
        }
      transpose16(v);
      transpose16(w);
      for (int j = 0; j < nc; ++j) {
        const __m512i row = _mm512_inserti64x4(_mm512_zextsi256_si512(round_to_bf16(v[j])), round_to_bf16(w[j]), 1);
        uint16_t* out = dst + (c + j) * rows + r;
        if (stream && nr == 32 && (reinterpret_cast<uintptr_t>(out) & 63) == 0) _mm512_stream_si512(reinterpret_cast<__m512i*>(out), row);
        else _mm512_mask_storeu_epi16(out, rm, row);
      }
    }
  }
  _mm_sfence();  // streaming stores visible before the GEMM reads them
}
#pragma GCC diagnostic pop

}  // namespace sft::detail
