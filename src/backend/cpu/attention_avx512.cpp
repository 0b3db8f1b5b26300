// AVX-512 tile operations for the FlashAttention kernels of attention.cpp: register-blocked
// broadcast-FMA micro-GEMMs (scores: 6 query rows × 64 keys in 24 accumulators; gemm_acc: R rows ×
// HS/16 vectors, R·HS/16 ≤ 24 accumulators) that skip the masked half of diagonal tiles, the
// masked online-softmax / dS steps with a vector exp2 (Cephes exp2f polynomial on [-1/2, 1/2],
// about 1 ulp), and 16×16 transposes for K/V. HS must be a multiple of 16, at most 128.
// Compiled with AVX-512 flags; attention.cpp calls these only after a run-time CPU check.
#pragma GCC diagnostic push  // GCC 12 intrinsic headers warn about their own code (PR 105593)
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/check.h"

namespace sft::cpu::detail {

namespace {

constexpr int kBc = 64;  // keys per tile, as attention.cpp
constexpr int kScoreRows = 6;  // query rows per score block: 24 accumulators

// 2^x for x <= ~0 (clamped below at -127); NaN stays NaN.
inline __m512 exp2_ps(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-127.0f), x);
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// Lanes of key vector v (keys 16v..16v+15) that lie below lim.
inline __mmask16 key_mask(int lim, int v) {
  const int k = std::clamp(lim - 16 * v, 0, 16);
  return __mmask16((1u << k) - 1);
}

// S (R, 16·NVK) = A (R, K) · Bt (K, 16·NVK): the first NVK key vectors of a 64-key tile row.
template <int R, int NVK>
inline void scores_block(float* S, const float* A, int64_t lda, const float* Bt, int64_t ldb,
                         int K) {
  __m512 acc[R][NVK];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NVK; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    __m512 b[NVK];
#pragma GCC unroll 4
    for (int v = 0; v < NVK; ++v) b[v] = _mm512_loadu_ps(Bt + k * ldb + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(A[r * lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NVK; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NVK; ++v) _mm512_storeu_ps(S + r * kBc + 16 * v, acc[r][v]);
}

// C (R, 16·NV) += A (R, K) · B (K, 16·NV), A(r, k) = A[r*a_rs + k*a_cs]
template <int NV, int R>
inline void gemm_block(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs,
                       const float* B, int64_t ldb, int K) {
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_loadu_ps(C + r * ldc + 16 * v);
  for (int k = 0; k < K; ++k) {
    __m512 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(B + k * ldb + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(A[r * a_rs + k * a_cs]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + r * ldc + 16 * v, acc[r][v]);
}

// Rows in blocks of R, then one smaller block for the remainder (all R' < R instantiated). Block
// rows [r0, r1) use k in [max(0, r0 + k_lo), min(K, r1 + k_hi)): the causal band of a diagonal
// tile; the A entries outside a row's own band are zero (masked P / dS).
template <int NV, int R>
void gemm_rows(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs, const float* B,
               int64_t ldb, int M, int K, int k_lo, int k_hi) {
  int r = 0;
  for (; r + R <= M; r += R) {
    const int kb = std::max(0, r + k_lo), ke = std::min(K, r + R + k_hi);
    if (kb < ke)
      gemm_block<NV, R>(C + r * ldc, ldc, A + r * a_rs + kb * a_cs, a_rs, a_cs, B + kb * ldb, ldb,
                        ke - kb);
  }
  if constexpr (R > 1)
    if (r < M)
      gemm_rows<NV, R - 1>(C + r * ldc, ldc, A + r * a_rs, a_rs, a_cs, B, ldb, M - r, K, k_lo + r,
                           k_hi + r);
}

template <int NV>
void gemm_acc_nv(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs,
                 const float* B, int64_t ldb, int M, int K, int k_lo, int k_hi) {
  gemm_rows<NV, std::clamp(24 / NV, 1, 8)>(C, ldc, A, a_rs, a_cs, B, ldb, M, K, k_lo, k_hi);
}

// Rows r of a diagonal tile need keys j <= diag + r only: whole 16-key vectors past that for
// every row of a block are skipped (left unwritten; the softmax / grad steps mask them).
template <int R>
void scores_rows(float* S, const float* A, int64_t lda, const float* Bt, int64_t ldb, int M, int K,
                 int diag) {
  int r = 0;
  for (; r + R <= M; r += R) {
    const int keys = std::clamp(diag + r + R, 0, kBc), nvk = (keys + 15) / 16;
    float* s = S + r * kBc;
    const float* a = A + r * lda;
    switch (nvk) {
      case 1: scores_block<R, 1>(s, a, lda, Bt, ldb, K); break;
      case 2: scores_block<R, 2>(s, a, lda, Bt, ldb, K); break;
      case 3: scores_block<R, 3>(s, a, lda, Bt, ldb, K); break;
      case 4: scores_block<R, 4>(s, a, lda, Bt, ldb, K); break;
      default: break;
    }
  }
  if constexpr (R > 1)
    if (r < M) scores_rows<R - 1>(S + r * kBc, A + r * lda, lda, Bt, ldb, M - r, K, diag + r);
}

// 16×16 transpose of rows r[0..15] (in registers), written as 16 rows of dst with stride ldd.
inline void transpose16_store(__m512 r[16], float* dst, int64_t ldd) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // r[4i + j], 128-bit lane L: column 4L + j of rows 4i..4i+3
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), b = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
    const __m512 c = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    const __m512 e = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    _mm512_storeu_ps(dst + j * ldd, _mm512_shuffle_f32x4(a, c, 0x88));
    _mm512_storeu_ps(dst + (8 + j) * ldd, _mm512_shuffle_f32x4(a, c, 0xdd));
    _mm512_storeu_ps(dst + (4 + j) * ldd, _mm512_shuffle_f32x4(b, e, 0x88));
    _mm512_storeu_ps(dst + (12 + j) * ldd, _mm512_shuffle_f32x4(b, e, 0xdd));
  }
}

}  // namespace

void attn_scores_avx512(float* S, const float* A, int64_t lda, const float* Bt, int64_t ldb, int M,
                        int K, int diag) {
  scores_rows<kScoreRows>(S, A, lda, Bt, ldb, M, K, diag);
}

// dst (HS, ldd) columns [0, round16(n)) = src (n, HS) rows of stride lds, transposed; columns
// n..round16(n) get zeros.
void attn_transpose_avx512(float* dst, int64_t ldd, const float* src, int64_t lds, int n, int HS) {
  __m512 r[16];
  for (int n0 = 0; n0 < n; n0 += 16) {
    const int rows = std::min(16, n - n0);
    for (int d0 = 0; d0 < HS; d0 += 16) {
      if (rows == 16) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + (n0 + i) * lds + d0);
      } else {
        for (int i = 0; i < 16; ++i)
          r[i] = i < rows ? _mm512_loadu_ps(src + (n0 + i) * lds + d0) : _mm512_setzero_ps();
      }
      transpose16_store(r, dst + d0 * ldd + n0, ldd);
    }
  }
}

void attn_gemm_acc_avx512(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs,
                          const float* B, int64_t ldb, int M, int K, int HS, int k_lo, int k_hi) {
  switch (HS / 16) {
    case 1: return gemm_acc_nv<1>(C, ldc, A, a_rs, a_cs, B, ldb, M, K, k_lo, k_hi);
    case 2: return gemm_acc_nv<2>(C, ldc, A, a_rs, a_cs, B, ldb, M, K, k_lo, k_hi);
    case 3: return gemm_acc_nv<3>(C, ldc, A, a_rs, a_cs, B, ldb, M, K, k_lo, k_hi);
    case 4: return gemm_acc_nv<4>(C, ldc, A, a_rs, a_cs, B, ldb, M, K, k_lo, k_hi);
    case 5: return gemm_acc_nv<5>(C, ldc, A, a_rs, a_cs, B, ldb, M, K, k_lo, k_hi);
    case 6: return gemm_acc_nv<6>(C, ldc, A, a_rs, a_cs, B, ldb, M, K, k_lo, k_hi);
    case 7: return gemm_acc_nv<7>(C, ldc, A, a_rs, a_cs, B, ldb, M, K, k_lo, k_hi);
    case 8: return gemm_acc_nv<8>(C, ldc, A, a_rs, a_cs, B, ldb, M, K, k_lo, k_hi);
    default: SFT_ASSERT(false);
  }
}

void attn_softmax_avx512(float* S, float* m, float* l, float* O, int HS, int M, int diag, int nk,
                         float c) {
  const __m512 cv = _mm512_set1_ps(c), ninf = _mm512_set1_ps(-INFINITY);
  for (int r = 0; r < M; ++r) {
    float* s = S + r * kBc;
    const int lim = std::clamp(diag + r + 1, 0, nk);
    __m512 x[4], mx = ninf;
    for (int v = 0; v < 4; ++v) {
      x[v] = _mm512_mask_mul_ps(ninf, key_mask(lim, v), _mm512_loadu_ps(s + 16 * v), cv);
      mx = _mm512_max_ps(mx, x[v]);
    }
    const float m_new = std::max(m[r], _mm512_reduce_max_ps(mx));
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = std::exp2(m[r] - m_use);
    const __m512 mu = _mm512_set1_ps(m_use);
    __m512 sum = _mm512_setzero_ps();
    for (int v = 0; v < 4; ++v) {
      const __m512 p = _mm512_maskz_mov_ps(key_mask(lim, v), exp2_ps(_mm512_sub_ps(x[v], mu)));
      sum = _mm512_add_ps(sum, p);
      _mm512_storeu_ps(s + 16 * v, p);
    }
    l[r] = l[r] * alpha + _mm512_reduce_add_ps(sum);
    m[r] = m_new;
    if (alpha != 1.0f) {
      const __m512 a = _mm512_set1_ps(alpha);
      for (int e = 0; e < HS; e += 16)
        _mm512_storeu_ps(O + r * HS + e, _mm512_mul_ps(_mm512_loadu_ps(O + r * HS + e), a));
    }
  }
}

void attn_grad_avx512(float* P, float* dP, const float* lse2, const float* D, int64_t ld, int M,
                      int diag, int nk, float c, float scale) {
  const __m512 cv = _mm512_set1_ps(c), sv = _mm512_set1_ps(scale);
  for (int r = 0; r < M; ++r) {
    const int lim = std::clamp(diag + r + 1, 0, nk);
    const __m512 l2 = _mm512_set1_ps(lse2[r * ld]), d = _mm512_set1_ps(D[r * ld]);
    for (int v = 0; v < 4; ++v) {
      float* p = P + r * kBc + 16 * v;
      float* dp = dP + r * kBc + 16 * v;
      const __mmask16 k = key_mask(lim, v);  // lanes outside it may hold unwritten scores
      const __m512 pv = _mm512_maskz_mov_ps(k, exp2_ps(_mm512_fmsub_ps(_mm512_loadu_ps(p), cv, l2)));
      _mm512_storeu_ps(p, pv);
      const __m512 ds = _mm512_mul_ps(_mm512_mul_ps(pv, _mm512_sub_ps(_mm512_loadu_ps(dp), d)), sv);
      _mm512_storeu_ps(dp, _mm512_maskz_mov_ps(k, ds));
    }
  }
}

}  // namespace sft::cpu::detail
