// bf16 FlashAttention for CPUs with AMX tiles: the causal, GQA, variable-length algorithm of
// attention.cpp (FlashAttention-2, Dao 2023, Alg. 1 forward / Alg. 2 backward) with every tile
// product on AMX (tdpbf16ps: operands rounded to bf16, nearest even, fp32 accumulation) and the
// online softmax, dS = P∘(dP − D) and all statistics in fp32 AVX-512. Scores are kept transposed,
// Sᵀ (keys × queries), so the softmax max/sum run down columns (plain vector ops) and Pᵀ / dSᵀ
// are written straight into the operand layouts of the next product: no transpose in the loops.
// K/V (and in the backward Q/dO) tiles are packed to bf16 once per call; units of work and their
// order are those of attention.cpp, so results are deterministic for any thread count.
#pragma GCC diagnostic push  // GCC 12 intrinsic headers warn about their own code (PR 105593)
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/kernels.h"
#include "core/check.h"

namespace sft::cpu {

namespace {

using bf16_t = uint16_t;
constexpr int kB = 64;  // queries per tile = keys per tile
constexpr float kLog2e = 1.44269504088896341f, kLn2 = 0.693147180559945309f;

// ---- AMX: every tile 16 rows × 64 bytes. Tiles 0-3 hold a 32×32 fp32 block of C, 4-5 two
// 16-row slices of A (16 × 32 bf16), 6-7 two 16-column slices of B in VNNI pairs. ----
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

void tiles_begin() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  _tile_loadconfig(&cfg);
}

// C (32, 32) = [C +] A (32, 32·ks) · B (32·ks, 32), strides in elements: A(m, k) = a[m·lda + k]
// (bf16); B in VNNI pairs, B(k, n) = b[(k/2)·ldb + 2n + k%2] (bf16); C(m, n) = c[m·ldc + n].
void mm_32x32(float* c, int64_t ldc, const bf16_t* a, int64_t lda, const bf16_t* b, int64_t ldb,
              int ks, bool accumulate) {
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
  for (int s = 0; s < ks; ++s) {
    _tile_loadd(4, a + 32 * s, lda * 2);
    _tile_loadd(5, a + 16 * lda + 32 * s, lda * 2);
    _tile_loadd(6, b + 16 * s * ldb, ldb * 2);
    _tile_loadd(7, b + 16 * s * ldb + 32, ldb * 2);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, ldc * 4);
  _tile_stored(1, c + 16, ldc * 4);
  _tile_stored(2, c + 16 * ldc, ldc * 4);
  _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
}

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

inline __m512 row_or_zero(const float* src, int64_t ld, int r, int n, int e) {
  return r < n ? _mm512_loadu_ps(src + r * ld + e) : _mm512_setzero_ps();
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

// ---- tiles of the packed sequences ----

struct TileRef {
  int64_t row;  // first token
  int n;        // valid rows (<= 64)
};

// 64-token tiles of every sequence in order; tile t of sequence s is tiles[base[s] + t].
std::vector<TileRef> tile_refs(const SeqLayout& seqs, std::vector<int64_t>& base) {
  std::vector<TileRef> tiles;
  base.assign(size_t(seqs.num_seqs), 0);
  for (int s = 0; s < seqs.num_seqs; ++s) {
    const int64_t s0 = seqs.cu_seqlens[s], T = seqs.cu_seqlens[s + 1] - s0;
    SFT_CHECK(T >= 0, "attention", "cu_seqlens not increasing at sequence {}", s);
    base[size_t(s)] = int64_t(tiles.size());
    for (int64_t i = 0; i < T; i += kB) tiles.push_back({s0 + i, int(std::min<int64_t>(kB, T - i))});
  }
  return tiles;
}

// Sᵀ (64, 64) = A (64 keys, HS) · Bᵀ-pairs (HS, 64 queries) skipping 32×32 blocks past the last
// key nk, the last query M, or above the causal diagonal (key > query + diag).
void scores_t(float* S, const bf16_t* a, const bf16_t* b, int HS, int M, int nk, int diag) {
  for (int kb = 0; kb < kB; kb += 32)
    for (int qb = 0; qb < kB; qb += 32)
      if (kb < nk && qb < M && kb <= qb + 31 + diag)
        mm_32x32(S + kb * kB + qb, kB, a + kb * HS, HS, b + 2 * qb, 2 * kB, HS / 32, false);
}

template <class T>
T* grow(std::vector<T>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
  return v.data();
}

// Packed bf16 operands and (N, NH)-sized statistics that outlive a call (per calling thread).
thread_local std::vector<bf16_t> tls_kv, tls_q;
thread_local std::vector<float> tls_stats;

// Also the first use of AMX in a process: cpu_features() asks Linux for tile state before any
// tile instruction (without it tileloadconfig faults).
void check_heads(const SeqLayout& seqs, int NH, int NKV, int HS) {
  SFT_CHECK(cpu_features().amx_usable(), "attention", "the AMX attention kernel needs AMX-BF16 "
            "tiles: {}", cpu_features().amx_refusal.empty() ? "this CPU has none"
                                                             : cpu_features().amx_refusal);
  SFT_CHECK(NH > 0 && NKV > 0 && NH % NKV == 0 && HS > 0 && HS % 32 == 0, "attention",
            "bad head layout for the AMX kernel: NH={} NKV={} HS={}", NH, NKV, HS);
  SFT_CHECK(seqs.num_seqs > 0 && seqs.cu_seqlens && seqs.cu_seqlens[0] == 0, "attention",
            "empty or malformed sequence layout ({} sequences)", seqs.num_seqs);
}

}  // namespace

bool attention_amx_usable(int HS) {
  const char* isa = std::getenv("SFT_CPU_ISA");
  const char* attn = std::getenv("SFT_ATTENTION");
  return HS > 0 && HS % 32 == 0 && !(isa && std::string_view(isa) == "generic") &&
         !(attn && std::string_view(attn) == "fp32") && cpu_features().amx_usable();
}

namespace {

// Online-softmax step on Sᵀ (64 keys, 64 queries) of one key tile, query column q sees keys
// j < nk with j <= q + diag and exists if q < M: updates the running max m and sum l (64, in
// log2 units, c = scale·log2 e), rescales Oᵀ (HS, 64) columns, and writes Pᵀ = 2^(Sᵀ·c − m) in
// VNNI pairs pv (32, 2·64), zero where masked.
void softmax_t(const float* S, float* m, float* l, float* Ot, bf16_t* pv, int HS, int M, int nk,
               int diag, float c) {
  const __m512 cv = _mm512_set1_ps(c), ninf = _mm512_set1_ps(-INFINITY), zero = _mm512_setzero_ps();
  for (int q0 = 0; q0 < kB; q0 += 16) {
    __m512 mx = ninf;
    for (int j = 0; j < nk; ++j)
      mx = _mm512_max_ps(mx, _mm512_mask_mul_ps(ninf, lanes(j - diag - q0, M - q0),
                                                _mm512_loadu_ps(S + j * kB + q0), cv));
    const __m512 m_old = _mm512_loadu_ps(m + q0), m_new = _mm512_max_ps(m_old, mx);
    const __m512 m_use = _mm512_mask_mov_ps(m_new, _mm512_cmp_ps_mask(m_new, ninf, _CMP_EQ_OQ), zero);
    const __m512 alpha = exp2_ps(_mm512_sub_ps(m_old, m_use));
    __m512 sum = zero;
    for (int p = 0; p < kB / 2; ++p) {
      __m512 pj[2];
      for (int t = 0; t < 2; ++t) {
        const int j = 2 * p + t;
        const __mmask16 k = j < nk ? lanes(j - diag - q0, M - q0) : 0;
        pj[t] = _mm512_maskz_mov_ps(
            k, exp2_ps(_mm512_fmsub_ps(_mm512_loadu_ps(S + j * kB + q0), cv, m_use)));
        sum = _mm512_add_ps(sum, pj[t]);
      }
      _mm512_storeu_si512(pv + p * 2 * kB + 2 * q0, to_bf16_pairs(pj[0], pj[1]));
    }
    _mm512_storeu_ps(l + q0, _mm512_fmadd_ps(_mm512_loadu_ps(l + q0), alpha, sum));
    _mm512_storeu_ps(m + q0, m_new);
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
  for (int q0 = 0; q0 < kB; q0 += 16) {
    const __m512 l2 = _mm512_loadu_ps(lse2 + q0), d = _mm512_loadu_ps(D + q0);
    for (int p = 0; p < kB / 2; ++p) {
      __m512 ds[2];
      for (int t = 0; t < 2; ++t) {
        const int j = 2 * p + t;
        const __mmask16 k = j < nk ? lanes(j - diag - q0, M - q0) : 0;
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
        _mm512_storeu_ps(dst + (r0 + i) * ld + e, x);
      }
    }
}

}  // namespace

void attention_forward_amx(float* out, float* lse, const float* qkv, const SeqLayout& seqs,
                           int NH, int NKV, int HS) {
  check_heads(seqs, NH, NKV, HS);
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS, TS = int64_t(kB) * HS;
  std::vector<int64_t> base;
  const std::vector<TileRef> tiles = tile_refs(seqs, base);
  const int64_t NT = int64_t(tiles.size());
  bf16_t* kp = grow(tls_kv, 2 * NT * NKV * TS);  // per (tile, kv head): K (64, HS)
  bf16_t* vt = kp + NT * NKV * TS;               // per (tile, kv head): Vᵀ (HS, 64)
#pragma omp parallel for schedule(static)
  for (int64_t u = 0; u < NT * NKV; ++u) {
    const TileRef t = tiles[size_t(u / NKV)];
    const float* k = qkv + t.row * QKV + int64_t(NH + u % NKV) * HS;
    pack_rows(kp + u * TS, k, QKV, t.n, HS);
    pack_cols(vt + u * TS, k + int64_t(NKV) * HS, QKV, t.n, HS);
  }
  // Units (sequence, head, query tile), per head the costliest (last) query tiles first.
  struct Unit { int s, h, qt; };
  std::vector<Unit> units;
  for (int s = 0; s < seqs.num_seqs; ++s) {
    const int64_t T = seqs.cu_seqlens[s + 1] - seqs.cu_seqlens[s];
    for (int h = 0; h < NH; ++h)
      for (int qt = int((T + kB - 1) / kB) - 1; qt >= 0; --qt) units.push_back({s, h, qt});
  }
  const float c = kLog2e / std::sqrt(float(HS));
#pragma omp parallel
  {
    tiles_begin();
    std::vector<float> S(size_t(kB) * kB), Ot(static_cast<size_t>(TS)), m(kB), l(kB), inv(kB);
    std::vector<bf16_t> qv(static_cast<size_t>(TS)), pv(size_t(kB) * kB);
#pragma omp for schedule(dynamic, 1)
    for (size_t u = 0; u < units.size(); ++u) {
      const int s = units[u].s, h = units[u].h, g = h / (NH / NKV);
      const TileRef qt = tiles[size_t(base[size_t(s)] + units[u].qt)];
      const int64_t s0 = seqs.cu_seqlens[s], i0 = qt.row - s0;
      const int M = qt.n;
      pack_pairs_t(qv.data(), qkv + qt.row * QKV + int64_t(h) * HS, QKV, M, HS);  // Qᵀ pairs
      std::fill(Ot.begin(), Ot.end(), 0.0f);
      std::fill(m.begin(), m.end(), -INFINITY);
      std::fill(l.begin(), l.end(), 0.0f);
      for (int64_t j0 = 0; j0 <= i0; j0 += kB) {
        const int64_t id = (base[size_t(s)] + j0 / kB) * NKV + g;
        const int nk = tiles[size_t(id / NKV)].n, diag = int(i0 - j0);
        scores_t(S.data(), kp + id * TS, qv.data(), HS, M, nk, diag);
        softmax_t(S.data(), m.data(), l.data(), Ot.data(), pv.data(), HS, M, nk, diag, c);
        for (int qb = 0; qb < M; qb += 32) {  // Oᵀ (HS, 64) += Vᵀ (HS, keys) · Pᵀ (keys, 64)
          const int ks = (std::min(nk, qb + 32 + diag) + 31) / 32;
          for (int e = 0; e < HS; e += 32)
            mm_32x32(Ot.data() + e * kB + qb, kB, vt + id * TS + e * kB, kB, pv.data() + 2 * qb,
                     2 * kB, ks, true);
        }
      }
      for (int r = 0; r < M; ++r) {
        inv[size_t(r)] = 1.0f / l[size_t(r)];
        lse[(qt.row + r) * NH + h] = (m[size_t(r)] + std::log2(l[size_t(r)])) * kLn2;
      }
      store_t(out + qt.row * OC + int64_t(h) * HS, OC, Ot.data(), kB, M, HS, inv.data());
    }
    _tile_release();
  }
}

void attention_backward_amx(float* dqkv, const float* dout, const float* qkv, const float* out,
                            const float* lse, const SeqLayout& seqs, int NH, int NKV, int HS) {
  check_heads(seqs, NH, NKV, HS);
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS, TS = int64_t(kB) * HS;
  std::vector<int64_t> base;
  const std::vector<TileRef> tiles = tile_refs(seqs, base);
  const int64_t NT = int64_t(tiles.size()), NQ = NT * NH, NK = NT * NKV;
  // Per (head, tile) Qᵀ, dOᵀ pairs (HS/2, 2·64) and Q, dO pairs (32, 2·HS) — so the Q, dO pairs
  // of a head's consecutive tiles form one operand over all their rows —, lse2 (lse in log2
  // units) and D = rowsum(dO∘O), 64 each, zero past the tile's rows; per (tile, kv head) K, V
  // rows (64, HS) and Kᵀ (HS, 64).
  bf16_t* qtp = grow(tls_q, 4 * NQ * TS);
  bf16_t *dotp = qtp + NQ * TS, *qp = dotp + NQ * TS, *dop = qp + NQ * TS;
  bf16_t* kp = grow(tls_kv, 3 * NK * TS);
  bf16_t *vp = kp + NK * TS, *ktp = vp + NK * TS;
  float* lse2 = grow(tls_stats, 2 * NQ * kB);
  float* D = lse2 + NQ * kB;
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (int64_t w = 0; w < NQ; ++w) {  // tile-major: a tile's rows are read head after head
      const TileRef t = tiles[size_t(w / NH)];
      const int h = int(w % NH);
      const int64_t u = int64_t(h) * NT + w / NH;
      const float* q = qkv + t.row * QKV + int64_t(h) * HS;
      const float* go = dout + t.row * OC + int64_t(h) * HS;
      const float* o = out + t.row * OC + int64_t(h) * HS;
      pack_pairs_t(qtp + u * TS, q, QKV, t.n, HS);
      pack_pairs_t(dotp + u * TS, go, OC, t.n, HS);
      pack_pairs(qp + u * TS, q, QKV, t.n, HS);
      pack_pairs(dop + u * TS, go, OC, t.n, HS);
      for (int r = 0; r < kB; ++r) {
        __m512 d = _mm512_setzero_ps();
        for (int e = 0; r < t.n && e < HS; e += 16)
          d = _mm512_fmadd_ps(_mm512_loadu_ps(go + r * OC + e), _mm512_loadu_ps(o + r * OC + e), d);
        D[u * kB + r] = _mm512_reduce_add_ps(d);
        lse2[u * kB + r] = r < t.n ? lse[(t.row + r) * NH + h] * kLog2e : 0.0f;
      }
    }
#pragma omp for schedule(static)
    for (int64_t u = 0; u < NK; ++u) {
      const TileRef t = tiles[size_t(u / NKV)];
      const float* k = qkv + t.row * QKV + int64_t(NH + u % NKV) * HS;
      pack_rows(kp + u * TS, k, QKV, t.n, HS);
      pack_rows(vp + u * TS, k + int64_t(NKV) * HS, QKV, t.n, HS);
      pack_cols(ktp + u * TS, k, QKV, t.n, HS);
    }
  }
  std::vector<int> units(size_t(seqs.num_seqs) * NKV);  // s * NKV + g, longest sequences first
  for (size_t u = 0; u < units.size(); ++u) units[u] = int(u);
  auto len = [&](int u) { return seqs.cu_seqlens[u / NKV + 1] - seqs.cu_seqlens[u / NKV]; };
  std::stable_sort(units.begin(), units.end(), [&](int a, int b) { return len(a) > len(b); });
  const int group = NH / NKV;
  const float scale = 1.0f / std::sqrt(float(HS)), c = kLog2e * scale;
#pragma omp parallel
  {
    tiles_begin();
    std::vector<float> S(size_t(kB) * kB), dP(size_t(kB) * kB), dK(static_cast<size_t>(TS)), dV(static_cast<size_t>(TS));
    thread_local std::vector<float> dQt;  // per head of the group: dQᵀ (HS, Tp); kept (no page
                                          // faults per call)
    std::vector<bf16_t> dsv(size_t(kB) * kB);
    thread_local std::vector<bf16_t> cols;  // Pᵀ and dSᵀ (64 keys, Tp) of one key tile and head
#pragma omp for schedule(dynamic, 1)
    for (size_t u = 0; u < units.size(); ++u) {
      const int s = units[size_t(u)] / NKV, g = units[size_t(u)] % NKV;
      const int64_t s0 = seqs.cu_seqlens[s], T = seqs.cu_seqlens[s + 1] - s0;
      const int nt = int((T + kB - 1) / kB);
      // Row strides: T rounded up to 64, plus a little so rows 4 KiB apart do not share L1 sets.
      const int64_t Tp = int64_t(nt) * kB + 16, Tc = int64_t(nt) * kB + 32, tb = base[size_t(s)];
      float* dqt = grow(dQt, group * HS * Tp);
      std::fill(dqt, dqt + group * HS * Tp, 0.0f);
      bf16_t* pt = grow(cols, 2 * kB * Tc);
      bf16_t* dst = pt + kB * Tc;
      for (int jt = 0; jt < nt; ++jt) {
        const int64_t kid = (tb + jt) * NKV + g;
        const int nk = tiles[size_t(tb + jt)].n;
        std::fill(dK.begin(), dK.end(), 0.0f);
        std::fill(dV.begin(), dV.end(), 0.0f);
        for (int r = 0; r < nk; ++r)  // the dK, dV rows written after this tile: fetch them now
          for (int e = 0; e < HS; e += 16) {
            const float* row = dqkv + (s0 + int64_t(jt) * kB + r) * QKV + int64_t(NH + g) * HS + e;
            __builtin_prefetch(row, 1, 2);
            __builtin_prefetch(row + int64_t(NKV) * HS, 1, 2);
          }
        for (int h = g * group; h < (g + 1) * group; ++h) {
          const int64_t q0 = int64_t(h) * NT + tb + jt;  // (head, tile) index of query tile jt
          for (int it = jt; it < nt; ++it) {
            const int64_t qid = q0 + (it - jt);
            const int M = tiles[size_t(tb + it)].n, diag = (it - jt) * kB;
            scores_t(S.data(), kp + kid * TS, qtp + qid * TS, HS, M, nk, diag);
            scores_t(dP.data(), vp + kid * TS, dotp + qid * TS, HS, M, nk, diag);
            const int64_t col = int64_t(it - jt) * kB;
            grad_t(S.data(), dP.data(), lse2 + qid * kB, D + qid * kB, pt + col, dst + col, Tc,
                   dsv.data(), M, nk, diag, c, scale);
            // dQᵀ (HS, q) += Kᵀ (HS, keys) · dSᵀ (keys, q), keys below min(nk, qb + 32 + diag).
            float* dq = dqt + int64_t(h - g * group) * HS * Tp + int64_t(it) * kB;
            for (int qb = 0; qb < M; qb += 32) {
              const int ks = (std::min(nk, qb + 32 + diag) + 31) / 32;
              for (int e = 0; e < HS; e += 32)
                mm_32x32(dq + e * Tp + qb, Tp, ktp + kid * TS + e * kB, kB, dsv.data() + 2 * qb,
                         2 * kB, ks, true);
            }
          }
          // dV (keys, HS) += Pᵀ (keys, q) · dO (q, HS), dK += dSᵀ · Q over all this head's query
          // tiles at once; key block kb is first seen by query kb (diagonal tile), q below 32·⌊kb/32⌋
          // is skipped.
          const int q_end = int(T - int64_t(jt) * kB + 31) / 32 * 32;
          for (int kb = 0; kb < nk; kb += 32)
            for (int e = 0; e < HS; e += 32) {
              mm_32x32(dV.data() + kb * HS + e, HS, pt + kb * Tc + kb, Tc,
                       dop + q0 * TS + kb * HS + 2 * e, 2 * HS, (q_end - kb) / 32, true);
              mm_32x32(dK.data() + kb * HS + e, HS, dst + kb * Tc + kb, Tc,
                       qp + q0 * TS + kb * HS + 2 * e, 2 * HS, (q_end - kb) / 32, true);
            }
        }
        for (int r = 0; r < nk; ++r) {
          float* row = dqkv + (s0 + int64_t(jt) * kB + r) * QKV;
          std::memcpy(row + int64_t(NH + g) * HS, dK.data() + r * HS, size_t(HS) * sizeof(float));
          std::memcpy(row + int64_t(NH + NKV + g) * HS, dV.data() + r * HS, size_t(HS) * sizeof(float));
        }
      }
      for (int h = g * group; h < (g + 1) * group; ++h)
        store_t(dqkv + s0 * QKV + int64_t(h) * HS, QKV, dqt + int64_t(h - g * group) * HS * Tp, Tp,
                int(T), HS, nullptr);
    }
    _tile_release();
  }
}

}  // namespace sft::cpu
