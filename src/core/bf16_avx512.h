// AVX-512 building blocks of the kernels that round fp32 to bf16 (round to nearest even, NaN kept
// quiet, denormals kept: bit-identical to f32_to_bf16 in core/dtype.h) and pair or transpose the
// results for VNNI / AMX operand layouts. Include only from files compiled with AVX-512 flags
// (*_avx512.cpp, *_amx.cpp); callers check the CPU first.
#pragma once
#include <immintrin.h>

namespace sft::simd {

// bf16 bits of x in the low half of each 32-bit lane (high half zero).
inline __m512i bf16_bits(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i hi = _mm512_srli_epi32(u, 16);
  const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  const __m512i bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb);
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
}

// 16 floats -> 16 bf16 (256 bits).
inline __m256i bf16_16(__m512 x) { return _mm512_cvtepi32_epi16(bf16_bits(x)); }

// x rounded to bf16 and widened back: fp32 values with the low 16 bits zero.
inline __m512 round_bf16(__m512 x) { return _mm512_castsi512_ps(_mm512_slli_epi32(bf16_bits(x), 16)); }

// Lane i = (bf16(lo[i]), bf16(hi[i])) as one 32-bit pair, low half first.
inline __m512i bf16_pairs(__m512 lo, __m512 hi) {
  return _mm512_or_si512(bf16_bits(lo), _mm512_slli_epi32(bf16_bits(hi), 16));
}

// 32 consecutive floats -> 32 bf16 in order (= 16 pairs of neighbours).
inline __m512i bf16_pack32(__m512 x0, __m512 x1) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(bf16_16(x0)), bf16_16(x1), 1);
}

// In-register transpose of a 16x16 matrix of 32-bit lanes: r[i] lane j -> r[j] lane i.
inline void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int g = 0; g < 4; ++g) {  // within 128-bit lanes: rows 4g..4g+3, columns 4L+e -> u[4g+e]
    t[4 * g + 0] = _mm512_unpacklo_epi32(r[4 * g], r[4 * g + 1]);
    t[4 * g + 1] = _mm512_unpackhi_epi32(r[4 * g], r[4 * g + 1]);
    t[4 * g + 2] = _mm512_unpacklo_epi32(r[4 * g + 2], r[4 * g + 3]);
    t[4 * g + 3] = _mm512_unpackhi_epi32(r[4 * g + 2], r[4 * g + 3]);
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g + 0], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g + 0], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int e = 0; e < 4; ++e) {  // 4x4 transpose of 128-bit lanes across u[e], u[4+e], u[8+e], u[12+e]
    const __m512i v0 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x44);
    const __m512i v1 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xee);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x44);
    const __m512i v3 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xee);
    r[0 + e] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    r[4 + e] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
    r[8 + e] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    r[12 + e] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
  }
}

}  // namespace sft::simd
