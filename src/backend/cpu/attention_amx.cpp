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

#include "backend/cpu/attention_amx_tiles.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/kernels.h"
#include "core/aligned_vector.h"
#include "core/check.h"

namespace sft::cpu {

using namespace amx;

namespace {

constexpr float kLog2e = 1.44269504088896341f, kLn2 = 0.693147180559945309f;

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

template <class T>
T* grow(AlignedVector<T>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
  return v.data();
}

// Packed bf16 operands and (N, NH)-sized statistics that outlive a call (per calling thread).
thread_local AlignedVector<bf16_t> tls_kv, tls_q;  // tile loads want 64-byte aligned rows
thread_local AlignedVector<float> tls_stats;

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
    AlignedVector<float> S(size_t(kB) * kB), Ot(static_cast<size_t>(TS)), m(kB), l(kB), inv(kB);
    AlignedVector<bf16_t> qv(static_cast<size_t>(TS)), pv(size_t(kB) * kB);
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
    stores_done();
    tiles_end();
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
    AlignedVector<float> S(size_t(kB) * kB), dP(size_t(kB) * kB), dK(static_cast<size_t>(TS)), dV(static_cast<size_t>(TS));
    thread_local AlignedVector<float> dQt;  // per head of the group: dQᵀ (HS, Tp); kept (no page
                                          // faults per call)
    AlignedVector<bf16_t> dsv(size_t(kB) * kB);
    thread_local AlignedVector<bf16_t> cols;  // Pᵀ and dSᵀ (64 keys, Tp) of one key tile and head
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
          store_row(row + int64_t(NH + g) * HS, dK.data() + r * HS, HS);
          store_row(row + int64_t(NH + NKV + g) * HS, dV.data() + r * HS, HS);
        }
      }
      for (int h = g * group; h < (g + 1) * group; ++h)
        store_t(dqkv + s0 * QKV + int64_t(h) * HS, QKV, dqt + int64_t(h - g * group) * HS * Tp, Tp,
                int(T), HS, nullptr);
    }
    stores_done();
    tiles_end();
  }
}

}  // namespace sft::cpu
