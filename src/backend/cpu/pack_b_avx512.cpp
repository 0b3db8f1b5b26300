// AVX-512 kernel of pack_b.h: fp32 weight rows loaded once, rounded to bf16 and laid into the
// blocked AMX layout with 64-byte stores. Forward form (B = wᵀ): 16 weight rows of 32 k give
// 16 x 16 k-pairs, transposed in registers so each store holds 16 n of one k-pair row. dx form
// (B = w): two weight rows interleaved into (k, k+1) pairs. Compiled with AVX-512 flags.
#include <immintrin.h>

#include "backend/cpu/pack_b.h"
#include "backend/cpu/simd_avx512.h"
#include "core/bf16_avx512.h"

namespace sft::cpu::detail {

void pack_b_bf16_avx512(const float* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst, int64_t n_blk0,
                        int64_t n_blk1) {
  constexpr int64_t kK = BlockedB::kK, kN = BlockedB::kN;
  const BlockedB b{b_is_wT ? IC : OC, b_is_wT ? OC : IC};
  const int64_t Kp = b.Kp();
  for (int64_t nb = n_blk0; nb < n_blk1; ++nb) {
    const int64_t n0 = nb * kN;
    for (int64_t k0 = 0; k0 < Kp; k0 += kK) {
      uint16_t* blk = dst + nb * Kp * kN + k0 * kN;  // (16 pairs, 64 n, 2)
      if (b_is_wT) {  // B(k, n) = w[n][k]: weight rows n, 32 consecutive k each
        const __mmask16 m0 = tail_mask(IC - k0), m1 = tail_mask(IC - k0 - 16);
        for (int64_t g = 0; g < kN; g += 16) {
          __m512i r[16];
          for (int i = 0; i < 16; ++i) {
            const int64_t n = n0 + g + i;
            if (n >= OC) {
              r[i] = _mm512_setzero_si512();
              continue;
            }
            const float* src = w + n * IC + k0;
            r[i] = simd::bf16_pack32(_mm512_maskz_loadu_ps(m0, src), _mm512_maskz_loadu_ps(m1, src + 16));
          }
          simd::transpose16(r);  // r[p] = pair p of the 16 rows
          for (int p = 0; p < 16; ++p) _mm512_store_si512(blk + p * 2 * kN + 2 * g, r[p]);
        }
      } else {  // B(k, n) = w[k][n]: weight rows k, k + 1 interleaved over 64 consecutive n
        for (int p = 0; p < 16; ++p) {
          const int64_t k = k0 + 2 * p;
          const float* r0 = w + k * IC + n0;
          const float* r1 = r0 + IC;
          for (int64_t q = 0; q < kN; q += 16) {
            const __mmask16 m = tail_mask(IC - n0 - q);
            const __m512 lo = k < OC ? _mm512_maskz_loadu_ps(m, r0 + q) : _mm512_setzero_ps();
            const __m512 hi = k + 1 < OC ? _mm512_maskz_loadu_ps(m, r1 + q) : _mm512_setzero_ps();
            _mm512_store_si512(blk + p * 2 * kN + 2 * q, simd::bf16_pairs(lo, hi));
          }
        }
      }
    }
  }
}

}  // namespace sft::cpu::detail
