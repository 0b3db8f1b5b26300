// AVX-512 kernels of pack_b.h: fp32 (or bf16) weight rows loaded, rounded to bf16 and laid into the blocked
// AMX layout with aligned 64-byte stores. Forward form (B = wᵀ): 16 weight rows of 32 k give
// 16 x 16 k-pairs, transposed in registers so each store holds 16 n of one k-pair row. dx form
// (B = w): two weight rows interleaved into (k, k+1) pairs. Compiled with AVX-512 flags.
#pragma GCC diagnostic push  // GCC 12 intrinsic headers warn about their own code (PR 105593)
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "backend/cpu/pack_b.h"
#include "backend/cpu/simd_avx512.h"
#include "core/bf16_avx512.h"

namespace sft::cpu::detail {
namespace {

constexpr int64_t kK = BlockedB::kK, kN = BlockedB::kN;

// 16 elements of a weight row as fp32 (masked): fp32 as is, bf16 widened exactly (a gathered bf16
// unit), so both sources go through the same rounding, which keeps a bf16 value unchanged.
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

// Forward form, the block of weight rows [o0, o0 + 64) x columns [i0, i0 + 32): B(k, n) = w[n][k].
template <class Src>
void fwd_block(const Src* w, int64_t OC, int64_t IC, int64_t o0, int64_t i0, uint16_t* blk) {
  const __mmask16 m0 = tail_mask(IC - i0), m1 = tail_mask(IC - i0 - 16);
  for (int64_t g = 0; g < kN; g += 16) {
    __m512i r[16];
    for (int i = 0; i < 16; ++i) {
      const int64_t o = o0 + g + i;
      const Src* src = w + o * IC + i0;
      r[i] = o < OC ? simd::bf16_pack32(load16(src, m0), load16(src + 16, m1))
                    : _mm512_setzero_si512();
    }
    simd::transpose16(r);  // r[p] = k-pair p of the 16 rows
    for (int p = 0; p < 16; ++p) _mm512_store_si512(blk + p * 2 * kN + 2 * g, r[p]);
  }
}

// dx form, the block of weight rows [o0, o0 + 32) x columns [i0, i0 + 64): B(k, n) = w[k][n].
template <class Src>
void dx_block(const Src* w, int64_t OC, int64_t IC, int64_t o0, int64_t i0, uint16_t* blk) {
  for (int p = 0; p < 16; ++p) {
    const int64_t o = o0 + 2 * p;
    const Src* r0 = w + o * IC + i0;
    for (int64_t q = 0; q < kN; q += 16) {
      const __mmask16 m = tail_mask(IC - i0 - q);
      const __m512 lo = o < OC ? load16(r0 + q, m) : _mm512_setzero_ps();
      const __m512 hi = o + 1 < OC ? load16(r0 + IC + q, m) : _mm512_setzero_ps();
      _mm512_store_si512(blk + p * 2 * kN + 2 * q, simd::bf16_pairs(lo, hi));
    }
  }
}

template <class Src>
void pack_one(const Src* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst, int64_t n_blk0, int64_t n_blk1) {
  const BlockedB b{b_is_wT ? IC : OC, b_is_wT ? OC : IC};
  const int64_t Kp = b.Kp();
  for (int64_t nb = n_blk0; nb < n_blk1; ++nb)
    for (int64_t k0 = 0; k0 < Kp; k0 += kK) {
      uint16_t* blk = dst + nb * Kp * kN + k0 * kN;  // (16 pairs, 64 n, 2)
      if (b_is_wT) fwd_block(w, OC, IC, nb * kN, k0, blk);
      else dx_block(w, OC, IC, k0, nb * kN, blk);
    }
}

template <class Src>
void pack_both(const Src* w, int64_t OC, int64_t IC, uint16_t* fwd, uint16_t* dx, int64_t o_tile0, int64_t o_tile1) {
  const BlockedB bf{IC, OC}, bd{OC, IC};  // forward: K = IC, N = OC; dx: K = OC, N = IC
  for (int64_t ot = o_tile0; ot < o_tile1; ++ot) {
    const int64_t o0 = ot * kN;
    for (int64_t i0 = 0; i0 < IC; i0 += kN)  // the 64 x 64 tile of w at (o0, i0), twice from cache
      for (int64_t h = 0; h < kN; h += kK) {
        if (i0 + h < bf.Kp()) fwd_block(w, OC, IC, o0, i0 + h, fwd + o0 / kN * bf.Kp() * kN + (i0 + h) * kN);
        if (o0 + h < bd.Kp()) dx_block(w, OC, IC, o0 + h, i0, dx + i0 / kN * bd.Kp() * kN + (o0 + h) * kN);
      }
  }
}

}  // namespace

void pack_b_bf16_avx512(const float* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst, int64_t n_blk0,
                        int64_t n_blk1) {
  pack_one(w, OC, IC, b_is_wT, dst, n_blk0, n_blk1);
}
void pack_b_bf16_avx512(const uint16_t* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst, int64_t n_blk0,
                        int64_t n_blk1) {
  pack_one(w, OC, IC, b_is_wT, dst, n_blk0, n_blk1);
}
void pack_b_bf16_both_avx512(const float* w, int64_t OC, int64_t IC, uint16_t* fwd, uint16_t* dx, int64_t o_tile0,
                             int64_t o_tile1) {
  pack_both(w, OC, IC, fwd, dx, o_tile0, o_tile1);
}
void pack_b_bf16_both_avx512(const uint16_t* w, int64_t OC, int64_t IC, uint16_t* fwd, uint16_t* dx,
                             int64_t o_tile0, int64_t o_tile1) {
  pack_both(w, OC, IC, fwd, dx, o_tile0, o_tile1);
}

}  // namespace sft::cpu::detail
