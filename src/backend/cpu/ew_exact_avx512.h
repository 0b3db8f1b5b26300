// Element-wise AVX-512 arithmetic that rounds exactly like the scalar C++ it replaces: add, sub
// and mul go through the embedded-rounding intrinsics (round to nearest even), which GCC never
// contracts into an FMA, so a*b + c stays two roundings as in the generic build (no -mfma there).
// Include only from files compiled with AVX-512 flags.
#pragma once
#include "backend/cpu/simd_avx512.h"

namespace sft::cpu::detail {

constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
inline __m512 add_rn(__m512 a, __m512 b) { return _mm512_add_round_ps(a, b, kRne); }
inline __m512 sub_rn(__m512 a, __m512 b) { return _mm512_sub_round_ps(a, b, kRne); }
inline __m512 mul_rn(__m512 a, __m512 b) { return _mm512_mul_round_ps(a, b, kRne); }
inline __m512 div_rn(__m512 a, __m512 b) { return _mm512_div_round_ps(a, b, kRne); }
inline __m512 sqrt_rn(__m512 a) { return _mm512_sqrt_round_ps(a, kRne); }

}  // namespace sft::cpu::detail
