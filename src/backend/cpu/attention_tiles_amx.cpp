// Tile operations of the bf16 AMX FlashAttention (attention_amx.cpp; FlashAttention-2, Dao 2023):
// the AMX 32×32 tile product (tdpbf16ps, bf16 operands, fp32 accumulation), fp32→bf16 packing of
// q/k/v/dO tiles into the A-row and VNNI-pair operand layouts (round to nearest even, as
// f32_to_bf16), and the fp32 AVX-512 softmax / dS steps on transposed score tiles Sᵀ (keys ×
// queries). Compiled with AMX flags; called only where cpu_features().amx_usable().
#pragma GCC diagnostic push  // GCC 12 intrinsic headers warn about their own code (PR 105593)
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backend/cpu/attention_amx_tiles.h"

namespace sft::cpu::amx {

namespace {

// AMX: every tile 16 rows × 64 bytes. Tiles 0-3 hold a 32×32 fp32 block of C, 4-5 two
// 16-row slices of A (16 × 32 bf16), 6-7 two 16-column slices of B in VNNI pairs. ----
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

// ---- fp32 vector helpers ----

// 2^x for x <= ~0 (clamped below at -127): 2^round(x) · Taylor series of 2^f, |f| <= 1/2, degree 7
// (truncation below 1e-8 relative).
inline __m512 exp2_ps(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-127.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  constexpr float coef[8] = {1.525273380405984e-5f, 1.5403530393381608e-4f, 1.3333558146428443e-3f,
                             9.618129107628477e-3f, 5.550410866482158e-2f, 2.402265069591007e-1f,
                             6.931471805599453e-1f, 1.0f};
  __m512 p = _mm512_set1_ps(coef[0]);
  for (int i = 1; i < 8; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(coef[i]));
  return _mm512_scalef_ps(p, n);
}

// Lanes [lo, hi) of 16, each clamped to [0, 16].
inline __mmask16 lanes(int lo, int hi) {
  lo = std::clamp(lo, 0, 16), hi = std::clamp(hi, 0, 16);
  return hi <= lo ? 0 : __mmask16((1u << hi) - (1u << lo));
}

inline __m256i to_bf16(__m512 x) { return (__m256i)_mm512_cvtneps_pbh(x); }

// 32 bf16 words: even[0], odd[0], even[1], odd[1], ... (one VNNI row segment of 16 columns).
inline __m512i to_bf16_pairs(__m512 even, __m512 odd) {
  alignas(64) static constexpr uint16_t idx[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21,
                                                   6, 22, 7, 23, 8, 24, 9, 25, 10, 26, 11, 27,
                                                   12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(odd, even);  // words 0-15 even, 16-31 odd
  return _mm512_permutexvar_epi16(_mm512_load_si512(idx), both);
}

// 16×16 transpose of 32-bit elements: swap the off-diagonal b×b blocks for b = 8, 4, 2, 1 (stage
// t = log2 b): rows i and i + b (i & b == 0) exchange the upper half of i's blocks with the lower
// half of (i + b)'s.
struct TransposeIdx {
  alignas(64) int32_t top[4][16], bot[4][16];
  constexpr TransposeIdx() : top{}, bot{} {
    for (int t = 0; t < 4; ++t)
      for (int c = 0, b = 1 << t; c < 16; ++c) {
        top[t][c] = (c & b) ? 16 + c - b : c;
        bot[t][c] = (c & b) ? 16 + c : c + b;
      }
  }
};
constexpr TransposeIdx kTransposeIdx;

inline void transpose16(__m512i r[16]) {
#pragma GCC unroll 4
  for (int t = 3; t >= 0; --t) {
    const int b = 1 << t;
    const __m512i it = _mm512_load_si512(kTransposeIdx.top[t]);
    const __m512i ib = _mm512_load_si512(kTransposeIdx.bot[t]);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      if (!(i & b)) {
        const __m512i x = _mm512_permutex2var_epi32(r[i], it, r[i + b]);
        r[i + b] = _mm512_permutex2var_epi32(r[i], ib, r[i + b]);
        r[i] = x;
      }
  }
}

// Outputs are written once and not read back here: non-temporal stores where 64-byte aligned
// (no read-for-ownership of cold lines); the caller fences (stores_done) before others read.
inline void stream_ps(float* dst, __m512 x) {
  if ((reinterpret_cast<uintptr_t>(dst) & 63) == 0) _mm512_stream_ps(dst, x);
  else _mm512_storeu_ps(dst, x);
}

inline __m512 row_or_zero(const float* src, int64_t ld, int r, int n, int e) {
  return r < n ? _mm512_loadu_ps(src + r * ld + e) : _mm512_setzero_ps();
}

}  // namespace

void tiles_begin() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  // GCC 12's _tile_loadconfig tells the compiler it reads only 8 bytes of cfg, which lets it drop
  // the stores above: a memory clobber keeps all 64.
  __asm__ __volatile__("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// C (32, 32) = [C +] A (32, 32·ks) · B (32·ks, 32), strides in elements: A's k-block s at
// a + s·a_step, rows lda apart (bf16); B in VNNI pairs, B(k, n) = b[(k/2)·ldb + 2n + k%2] (bf16);
// C(m, n) = c[m·ldc + n]. Loads interleaved with the products: one tile load per tdpbf16ps.
void mm_32x32_blocked(float* c, int64_t ldc, const bf16_t* a, int64_t lda, int64_t a_step, const bf16_t* b,
                      int64_t ldb, int64_t ks, bool accumulate) {
  if (accumulate) {
    _tile_loadd(0, c, ldc * 4);
    _tile_loadd(1, c + 16, ldc * 4);
    _tile_loadd(2, c + 16 * ldc, ldc * 4);
    _tile_loadd(3, c + 16 * ldc + 16, ldc * 4);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t s = 0; s < ks; ++s) {
    const bf16_t* as = a + s * a_step;
    const bf16_t* bs = b + 16 * s * ldb;
    _tile_loadd(4, as, lda * 2);
    _tile_loadd(6, bs, ldb * 2);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, bs + 32, ldb * 2);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, as + 16 * lda, lda * 2);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, ldc * 4);
  _tile_stored(1, c + 16, ldc * 4);
  _tile_stored(2, c + 16 * ldc, ldc * 4);
  _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
}

void tiles_end() { _tile_release(); }

void stores_done() { _mm_sfence(); }

void store_row(float* dst, const float* src, int n) {
  for (int e = 0; e < n; e += 16) stream_ps(dst + e, _mm512_loadu_ps(src + e));
}

// ---- packing fp32 rows src (n <= 64 valid of a 64-row tile, stride ld, HS wide) to bf16 ----

// dst (64, HS): the rows, zero rows from n on (A operand, K-dim = HS).
void pack_rows(bf16_t* dst, const float* src, int64_t ld, int n, int HS) {
  for (int r = 0; r < kB; ++r)
    for (int e = 0; e < HS; e += 16)
      _mm256_storeu_si256((__m256i*)(dst + r * HS + e), to_bf16(row_or_zero(src, ld, r, n, e)));
}

// dst (HS, 64): the tile transposed, zero columns from n on (A operand, K-dim = the 64 rows).
void pack_cols(bf16_t* dst, const float* src, int64_t ld, int n, int HS) {
  __m512i r[16];
  for (int r0 = 0; r0 < kB; r0 += 16)
    for (int e = 0; e < HS; e += 16) {
      for (int i = 0; i < 16; ++i) r[i] = _mm512_castps_si512(row_or_zero(src, ld, r0 + i, n, e));
      transpose16(r);
      for (int i = 0; i < 16; ++i)
        _mm256_storeu_si256((__m256i*)(dst + (e + i) * kB + r0), to_bf16(_mm512_castsi512_ps(r[i])));
    }
}

// dst (HS/2, 2·64): Bᵀ in VNNI pairs, B(k = dim, n = row) — dword (p, r) = (src[r][2p], src[r][2p+1]);
// the operand for products over HS (scores Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ).
void pack_pairs_t(bf16_t* dst, const float* src, int64_t ld, int n, int HS) {
  __m512i r[16];
  for (int r0 = 0; r0 < kB; r0 += 16)
    for (int e = 0; e < HS; e += 32) {
      for (int i = 0; i < 16; ++i)
        r[i] = (__m512i)_mm512_cvtne2ps_pbh(row_or_zero(src, ld, r0 + i, n, e + 16),
                                            row_or_zero(src, ld, r0 + i, n, e));
      transpose16(r);
      for (int i = 0; i < 16; ++i) _mm512_storeu_si512(dst + (e / 2 + i) * 2 * kB + 2 * r0, r[i]);
    }
}

// dst (32, 2·HS): the rows in VNNI pairs, B(k = row, n = dim) — rows 2p, 2p+1 interleaved; the
// operand for products over the 64 rows (dV = Pᵀ·dO, dK = dSᵀ·Q).
void pack_pairs(bf16_t* dst, const float* src, int64_t ld, int n, int HS) {
  for (int p = 0; p < kB / 2; ++p)
    for (int e = 0; e < HS; e += 16)
      _mm512_storeu_si512(dst + p * 2 * HS + 2 * e,
                          to_bf16_pairs(row_or_zero(src, ld, 2 * p, n, e),
                                        row_or_zero(src, ld, 2 * p + 1, n, e)));
}

// Sᵀ (64, 64) = A (64 keys, HS) · Bᵀ-pairs (HS, 64 queries) skipping 32×32 blocks past the last
// key nk, the last query M, or above the causal diagonal (key > query + diag).
void scores_t(float* S, const bf16_t* a, const bf16_t* b, int HS, int M, int nk, int diag) {
  for (int kb = 0; kb < kB; kb += 32)
    for (int qb = 0; qb < kB; qb += 32)
      if (kb < nk && qb < M && kb <= qb + 31 + diag)
        mm_32x32(S + kb * kB + qb, kB, a + kb * HS, HS, b + 2 * qb, 2 * kB, HS / 32, false);
}

// Online-softmax step on Sᵀ (64 keys, 64 queries) of one key tile, query column q sees keys
// j < nk with j <= q + diag and exists if q < M: updates the running max m and sum l (64, in
// log2 units, c = scale·log2 e), rescales Oᵀ (HS, 64) columns, and writes Pᵀ = 2^(Sᵀ·c − m) in
// VNNI pairs pv (32, 2·64), zero where masked.
void softmax_t(const float* S, float* m, float* l, float* Ot, bf16_t* pv, int HS, int M, int nk,
               int diag, float c) {
  const __m512 cv = _mm512_set1_ps(c), ninf = _mm512_set1_ps(-INFINITY), zero = _mm512_setzero_ps();
  const bool full = diag >= kB && M == kB && nk == kB;  // nothing masked (most tiles)
  for (int q0 = 0; q0 < kB; q0 += 16) {
    __m512 mx[4] = {ninf, ninf, ninf, ninf};  // 4 chains: max has a 4-cycle latency
    for (int j = 0; j < nk; ++j)
      mx[j % 4] = _mm512_max_ps(
          mx[j % 4], _mm512_mask_mul_ps(ninf, full ? 0xffff : lanes(j - diag - q0, M - q0),
                                        _mm512_loadu_ps(S + j * kB + q0), cv));
    const __m512 m_old = _mm512_loadu_ps(m + q0);
    const __m512 m_new = _mm512_max_ps(
        m_old, _mm512_max_ps(_mm512_max_ps(mx[0], mx[1]), _mm512_max_ps(mx[2], mx[3])));
    const __m512 m_use = _mm512_mask_mov_ps(m_new, _mm512_cmp_ps_mask(m_new, ninf, _CMP_EQ_OQ), zero);
    const __m512 alpha = exp2_ps(_mm512_sub_ps(m_old, m_use));
    __m512 sum[2] = {zero, zero};
    for (int p = 0; p < kB / 2; ++p) {
      __m512 pj[2];
      for (int t = 0; t < 2; ++t) {
        const int j = 2 * p + t;
        const __mmask16 k = full ? 0xffff : j < nk ? lanes(j - diag - q0, M - q0) : 0;
        pj[t] = _mm512_maskz_mov_ps(
            k, exp2_ps(_mm512_fmsub_ps(_mm512_loadu_ps(S + j * kB + q0), cv, m_use)));
        sum[t] = _mm512_add_ps(sum[t], pj[t]);
      }
      _mm512_storeu_si512(pv + p * 2 * kB + 2 * q0, to_bf16_pairs(pj[0], pj[1]));
    }
    _mm512_storeu_ps(l + q0, _mm512_fmadd_ps(_mm512_loadu_ps(l + q0), alpha,
                                             _mm512_add_ps(sum[0], sum[1])));
    _mm512_storeu_ps(m + q0, m_new);
    if (_mm512_cmp_ps_mask(m_new, m_old, _CMP_NEQ_UQ))  // some column's max moved: rescale
      for (int e = 0; e < HS; ++e)
        _mm512_storeu_ps(Ot + e * kB + q0, _mm512_mul_ps(_mm512_loadu_ps(Ot + e * kB + q0), alpha));
  }
}

// Backward step on Sᵀ, dPᵀ (64 keys, 64 queries), mask as softmax_t: Pᵀ = 2^(Sᵀ·c − lse2),
// dSᵀ = Pᵀ∘(dPᵀ − D)·scale with lse2, D per query (64). Writes Pᵀ and dSᵀ as bf16 rows pt, dst
// (64, 64; row stride ldp) and dSᵀ in VNNI pairs dsv (32, 2·64).
void grad_t(const float* S, const float* dP, const float* lse2, const float* D, bf16_t* pt,
            bf16_t* dst, int64_t ldp, bf16_t* dsv, int M, int nk, int diag, float c, float scale) {
  const __m512 cv = _mm512_set1_ps(c), sv = _mm512_set1_ps(scale);
  const bool full = diag >= kB && M == kB && nk == kB;  // nothing masked (most tiles)
  for (int q0 = 0; q0 < kB; q0 += 16) {
    const __m512 l2 = _mm512_loadu_ps(lse2 + q0), d = _mm512_loadu_ps(D + q0);
    for (int p = 0; p < kB / 2; ++p) {
      __m512 ds[2];
      for (int t = 0; t < 2; ++t) {
        const int j = 2 * p + t;
        const __mmask16 k = full ? 0xffff : j < nk ? lanes(j - diag - q0, M - q0) : 0;
        const __m512 pj = _mm512_maskz_mov_ps(
            k, exp2_ps(_mm512_fmsub_ps(_mm512_loadu_ps(S + j * kB + q0), cv, l2)));
        ds[t] = _mm512_maskz_mul_ps(
            k, _mm512_mul_ps(pj, _mm512_sub_ps(_mm512_loadu_ps(dP + j * kB + q0), d)), sv);
        _mm256_storeu_si256((__m256i*)(pt + j * ldp + q0), to_bf16(pj));
        _mm256_storeu_si256((__m256i*)(dst + j * ldp + q0), to_bf16(ds[t]));
      }
      _mm512_storeu_si512(dsv + p * 2 * kB + 2 * q0, to_bf16_pairs(ds[0], ds[1]));
    }
  }
}

// dst rows [0, n) (stride ld, HS wide) = srcᵀ · scale[row] for src (HS, ldt) columns [c0, c0 + n):
// the transposed accumulators Oᵀ / dQᵀ back to token rows.
void store_t(float* dst, int64_t ld, const float* src, int64_t ldt, int n, int HS,
             const float* row_scale) {
  __m512i r[16];
  for (int r0 = 0; r0 < n; r0 += 16)
    for (int e = 0; e < HS; e += 16) {
      for (int i = 0; i < 16; ++i) r[i] = _mm512_castps_si512(_mm512_loadu_ps(src + (e + i) * ldt + r0));
      transpose16(r);
      for (int i = 0; i < std::min(16, n - r0); ++i) {
        __m512 x = _mm512_castsi512_ps(r[i]);
        if (row_scale) x = _mm512_mul_ps(x, _mm512_set1_ps(row_scale[r0 + i]));
        stream_ps(dst + (r0 + i) * ld + e, x);
      }
    }
}

}  // namespace sft::cpu::amx
