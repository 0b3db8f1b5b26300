// Causal, GQA, variable-length attention with the FlashAttention algorithm (Dao et al. 2022,
// FlashAttention-2 2023, Alg. 1 forward and Alg. 2 backward): tiles of kBr = 64 queries × kBc = 64
// keys with an online softmax (running max and sum), so the largest score buffer is one 64×64 tile
// per thread; no T×T matrix ever exists. Same math as HF LlamaAttention's eager path (scale
// 1/sqrt(HS), causal within each packed sequence, kv head = h / (NH/NKV)).
// Work split (each unit writes disjoint outputs in a fixed order: deterministic for any thread count):
//   forward  - one unit per (sequence, query head, query tile);
//   backward - one unit per (sequence, kv head): it loops key tiles, then the NH/NKV query heads
//              of the group and their query tiles, owning dk/dv of its kv head and dq of its heads.
// Each key (and, in the backward, value) tile is transposed into a per-thread (HS, 64) buffer so
// the score GEMMs broadcast query elements against 16-key vectors. Tile GEMMs and softmax steps
// come from attention_avx512.cpp when the CPU has AVX-512 and HS is a multiple of 16 (≤ 128),
// else from the plain loops below (SFT_CPU_ISA=generic forces those).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "backend/cpu/kernels.h"
#include "core/check.h"

namespace sft::cpu {

namespace {

constexpr int kBr = 64;  // query rows per tile
constexpr int kBc = 64;  // keys per tile (the AVX-512 score kernel assumes 64 = 4 vectors)
constexpr float kLog2e = 1.44269504088896341f, kLn2 = 0.693147180559945309f;

// Tile operations. Scores are kept in log2 units (c = scale · log2 e) so exp2 does the softmax.
struct TileOps {
  // S (M, kBc) = A (M, K) · Bt (K, kBc); A rows stride lda, Bt rows stride ldb (kBc readable).
  // Only entries of row r at keys j <= diag + r are needed (others may be left unwritten).
  void (*scores)(float* S, const float* A, int64_t lda, const float* Bt, int64_t ldb, int M, int K,
                 int diag);
  // C (M, HS) += A (M, K) · B (K, HS); A(r, k) = A[r*a_rs + k*a_cs], B rows stride ldb. Row r may
  // skip k outside [r + k_lo, r + k_hi]: A is zero there (the causal band of a diagonal tile).
  void (*gemm_acc)(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs,
                   const float* B, int64_t ldb, int M, int K, int HS, int k_lo, int k_hi);
  // Online-softmax step: row r sees keys [0, clamp(diag + r + 1, 0, nk)) of the tile; updates the
  // running max m and sum l (M), rescales O (M, HS) rows, and turns S into P = 2^(S·c - m).
  void (*softmax)(float* S, float* m, float* l, float* O, int HS, int M, int diag, int nk, float c);
  // Backward step: P = 2^(S·c - lse2) (masked as above), dP := dS = P (dP - D) · scale.
  void (*grad)(float* P, float* dP, const float* lse2, const float* D, int64_t ld, int M, int diag,
               int nk, float c, float scale);
  // dst (HS, ldd) columns [0, n) = src (n, HS) rows of stride lds transposed (n <= kBc); may
  // write zeros up to column round_up(n, 16). Later columns keep stale (finite) values: the
  // softmax / grad steps mask every key at or past n.
  void (*transpose)(float* dst, int64_t ldd, const float* src, int64_t lds, int n, int HS);
};

constexpr int kAll = 1 << 28;  // k_lo / k_hi / diag that mask nothing

int valid_keys(int diag, int r, int nk) { return std::clamp(diag + r + 1, 0, nk); }

void scores_generic(float* S, const float* A, int64_t lda, const float* Bt, int64_t ldb, int M,
                    int K, int) {
  for (int r = 0; r < M; ++r) {
    float* s = S + r * kBc;
    std::fill(s, s + kBc, 0.0f);
    for (int k = 0; k < K; ++k) {
      const float a = A[r * lda + k];
      const float* b = Bt + k * ldb;
#pragma omp simd
      for (int c = 0; c < kBc; ++c) s[c] += a * b[c];
    }
  }
}

void gemm_acc_generic(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs,
                      const float* B, int64_t ldb, int M, int K, int HS, int k_lo, int k_hi) {
  for (int r = 0; r < M; ++r)
    for (int k = std::max(0, r + k_lo); k < std::min(K, r + k_hi + 1); ++k) {
      const float a = A[r * a_rs + k * a_cs];
      const float* b = B + k * ldb;
      float* c = C + r * ldc;
#pragma omp simd
      for (int e = 0; e < HS; ++e) c[e] += a * b[e];
    }
}

void softmax_generic(float* S, float* m, float* l, float* O, int HS, int M, int diag, int nk,
                     float c) {
  for (int r = 0; r < M; ++r) {
    float* s = S + r * kBc;
    const int lim = valid_keys(diag, r, nk);
    float mx = -INFINITY;
    for (int j = 0; j < lim; ++j) mx = std::max(mx, s[j] * c);
    const float m_new = std::max(m[r], mx), m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = std::exp2(m[r] - m_use);
    float sum = 0.0f;
    for (int j = 0; j < kBc; ++j) {
      s[j] = j < lim ? std::exp2(s[j] * c - m_use) : 0.0f;
      sum += s[j];
    }
    l[r] = l[r] * alpha + sum;
    m[r] = m_new;
    if (alpha != 1.0f)
      for (int e = 0; e < HS; ++e) O[r * HS + e] *= alpha;
  }
}

void grad_generic(float* P, float* dP, const float* lse2, const float* D, int64_t ld, int M,
                  int diag, int nk, float c, float scale) {
  for (int r = 0; r < M; ++r) {
    const int lim = valid_keys(diag, r, nk);
    for (int j = 0; j < kBc; ++j) {
      const float p = j < lim ? std::exp2(P[r * kBc + j] * c - lse2[r * ld]) : 0.0f;
      P[r * kBc + j] = p;
      dP[r * kBc + j] = j < lim ? p * (dP[r * kBc + j] - D[r * ld]) * scale : 0.0f;
    }
  }
}

void transpose_generic(float* dst, int64_t ldd, const float* src, int64_t lds, int n, int HS) {
  for (int d = 0; d < HS; ++d)
    for (int i = 0; i < n; ++i) dst[d * ldd + i] = src[i * lds + d];
}

}  // namespace

namespace detail {
void attn_scores_avx512(float* S, const float* A, int64_t lda, const float* Bt, int64_t ldb, int M,
                        int K, int diag);
void attn_gemm_acc_avx512(float* C, int64_t ldc, const float* A, int64_t a_rs, int64_t a_cs,
                          const float* B, int64_t ldb, int M, int K, int HS, int k_lo, int k_hi);
void attn_transpose_avx512(float* dst, int64_t ldd, const float* src, int64_t lds, int n, int HS);
void attn_softmax_avx512(float* S, float* m, float* l, float* O, int HS, int M, int diag, int nk,
                         float c);
void attn_grad_avx512(float* P, float* dP, const float* lse2, const float* D, int64_t ld, int M,
                      int diag, int nk, float c, float scale);
}  // namespace detail

namespace {

TileOps pick_ops(int HS) {
  static const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  const char* isa = std::getenv("SFT_CPU_ISA");
  if (cpu && !(isa && std::string_view(isa) == "generic") && HS % 16 == 0 && HS <= 128)
    return {detail::attn_scores_avx512, detail::attn_gemm_acc_avx512, detail::attn_softmax_avx512,
            detail::attn_grad_avx512, detail::attn_transpose_avx512};
  return {scores_generic, gemm_acc_generic, softmax_generic, grad_generic, transpose_generic};
}

int64_t check_layout(const SeqLayout& seqs, int NH, int NKV, int HS) {
  SFT_CHECK(NH > 0 && NKV > 0 && NH % NKV == 0 && HS > 0, "attention",
            "bad head layout NH={} NKV={} HS={}", NH, NKV, HS);
  SFT_CHECK(seqs.num_seqs > 0 && seqs.cu_seqlens && seqs.cu_seqlens[0] == 0, "attention",
            "empty or malformed sequence layout ({} sequences)", seqs.num_seqs);
  for (int s = 0; s < seqs.num_seqs; ++s)
    SFT_CHECK(seqs.cu_seqlens[s + 1] >= seqs.cu_seqlens[s], "attention",
              "cu_seqlens not increasing at sequence {}", s);
  return seqs.cu_seqlens[seqs.num_seqs];
}

// (N, NH) scratch of the backward that outlives a call (per calling thread): grown, never shrunk.
thread_local std::vector<float> tls_d, tls_lse2;

float* grow(std::vector<float>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
  return v.data();
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, const SeqLayout& seqs, int NH,
                       int NKV, int HS) {
  check_layout(seqs, NH, NKV, HS);
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS;
  const TileOps ops = pick_ops(HS);
  const float c = kLog2e / std::sqrt(float(HS));
  struct Unit { int s, h, qt; };
  std::vector<Unit> units;
  for (int s = 0; s < seqs.num_seqs; ++s) {
    const int T = seqs.cu_seqlens[s + 1] - seqs.cu_seqlens[s];
    for (int h = 0; h < NH; ++h)
      for (int qt = 0; qt * kBr < T; ++qt) units.push_back({s, h, qt});
  }
  // Per (sequence, head) the costliest query tiles first (cost ∝ qt + 1); consecutive units share
  // that head's keys and values in cache, and the cheap tiles at the end balance the threads.
  for (size_t a = 0; a < units.size();) {
    size_t b = a;
    while (b < units.size() && units[b].s == units[a].s && units[b].h == units[a].h) ++b;
    std::reverse(units.begin() + long(a), units.begin() + long(b));
    a = b;
  }
#pragma omp parallel
  {
    std::vector<float> S(size_t(kBr) * kBc), O(size_t(kBr) * HS), m(kBr), l(kBr);
    std::vector<float> kt(size_t(HS) * kBc);  // (HS, kBc) key tile transposed
#pragma omp for schedule(dynamic, 1)
    for (size_t u = 0; u < units.size(); ++u) {
      const int64_t s0 = seqs.cu_seqlens[units[u].s], T = seqs.cu_seqlens[units[u].s + 1] - s0;
      const int h = units[u].h, g = h / (NH / NKV), i0 = units[u].qt * kBr;
      const int M = int(std::min<int64_t>(kBr, T - i0));
      const float* q = qkv + (s0 + i0) * QKV + int64_t(h) * HS;  // (M, HS) rows stride QKV
      std::fill(O.begin(), O.end(), 0.0f);
      std::fill(m.begin(), m.end(), -INFINITY);
      std::fill(l.begin(), l.end(), 0.0f);
      for (int j0 = 0; j0 < i0 + M; j0 += kBc) {
        const int nk = int(std::min<int64_t>(kBc, T - j0));
        const float* k = qkv + (s0 + j0) * QKV + int64_t(NH + g) * HS;  // (nk, HS) stride QKV
        ops.transpose(kt.data(), kBc, k, QKV, nk, HS);
        ops.scores(S.data(), q, QKV, kt.data(), kBc, M, HS, i0 - j0);
        ops.softmax(S.data(), m.data(), l.data(), O.data(), HS, M, i0 - j0, nk, c);
        const float* v = qkv + (s0 + j0) * QKV + int64_t(NH + NKV + g) * HS;  // (nk, HS)
        ops.gemm_acc(O.data(), HS, S.data(), kBc, 1, v, QKV, M, std::min(nk, i0 + M - j0), HS, -kAll,
                     i0 - j0);
      }
      for (int r = 0; r < M; ++r) {
        const float inv = 1.0f / l[size_t(r)];
        float* o = out + (s0 + i0 + r) * OC + int64_t(h) * HS;
#pragma omp simd
        for (int e = 0; e < HS; ++e) o[e] = O[size_t(r) * HS + e] * inv;
        lse[(s0 + i0 + r) * NH + h] = (m[size_t(r)] + std::log2(l[size_t(r)])) * kLn2;
      }
    }
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, const SeqLayout& seqs, int NH, int NKV, int HS) {
  const int64_t N = check_layout(seqs, NH, NKV, HS);
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS;
  const TileOps ops = pick_ops(HS);
  const float scale = 1.0f / std::sqrt(float(HS)), c = kLog2e * scale;
  float* D = grow(tls_d, N * NH);        // (N, NH) rowsum(dout * out)
  float* lse2 = grow(tls_lse2, N * NH);  // (N, NH) lse in log2 units
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    std::memset(dqkv + n * QKV, 0, size_t(QKV) * sizeof(float));
    for (int h = 0; h < NH; ++h) {
      const float* g = dout + n * OC + int64_t(h) * HS;
      const float* o = out + n * OC + int64_t(h) * HS;
      float d = 0.0f;
#pragma omp simd reduction(+ : d)
      for (int e = 0; e < HS; ++e) d += g[e] * o[e];
      D[n * NH + h] = d;
      lse2[n * NH + h] = lse[n * NH + h] * kLog2e;
    }
  }
  std::vector<int> units(size_t(seqs.num_seqs) * NKV);  // s * NKV + g, longest sequences first
  for (size_t u = 0; u < units.size(); ++u) units[u] = int(u);
  auto len = [&](int u) { return seqs.cu_seqlens[u / NKV + 1] - seqs.cu_seqlens[u / NKV]; };
  std::stable_sort(units.begin(), units.end(), [&](int a, int b) { return len(a) > len(b); });
  const int group = NH / NKV;
#pragma omp parallel
  {
    std::vector<float> P(size_t(kBr) * kBc), dP(size_t(kBr) * kBc);
    std::vector<float> dK(size_t(kBc) * HS), dV(size_t(kBc) * HS);  // (kBc, HS)
    std::vector<float> kt(size_t(HS) * kBc), vt(size_t(HS) * kBc);  // (HS, kBc) tiles transposed
#pragma omp for schedule(dynamic, 1)
    for (size_t u = 0; u < units.size(); ++u) {
      const int s = units[u] / NKV, g = units[u] % NKV;
      const int64_t s0 = seqs.cu_seqlens[s], T = seqs.cu_seqlens[s + 1] - s0;
      for (int j0 = 0; j0 < T; j0 += kBc) {
        const int nk = int(std::min<int64_t>(kBc, T - j0));
        std::fill(dK.begin(), dK.end(), 0.0f);
        std::fill(dV.begin(), dV.end(), 0.0f);
        const float* kj = qkv + (s0 + j0) * QKV + int64_t(NH + g) * HS;  // (nk, HS) stride QKV
        const float* vj = kj + int64_t(NKV) * HS;                        // (nk, HS) stride QKV
        ops.transpose(kt.data(), kBc, kj, QKV, nk, HS);
        ops.transpose(vt.data(), kBc, vj, QKV, nk, HS);
        for (int h = g * group; h < (g + 1) * group; ++h)
          for (int i0 = j0 / kBr * kBr; i0 < T; i0 += kBr) {
            const int M = int(std::min<int64_t>(kBr, T - i0));
            const int64_t row = s0 + i0;
            const float* qi = qkv + row * QKV + int64_t(h) * HS;  // (M, HS) stride QKV
            const float* gi = dout + row * OC + int64_t(h) * HS;  // (M, HS) stride OC
            const int diag = i0 - j0;
            ops.scores(P.data(), qi, QKV, kt.data(), kBc, M, HS, diag);
            ops.scores(dP.data(), gi, OC, vt.data(), kBc, M, HS, diag);
            ops.grad(P.data(), dP.data(), lse2 + row * NH + h, D + row * NH + h, NH,
                     M, diag, nk, c, scale);
            ops.gemm_acc(dV.data(), HS, P.data(), 1, kBc, gi, OC, nk, M, HS, -diag, kAll);
            ops.gemm_acc(dK.data(), HS, dP.data(), 1, kBc, qi, QKV, nk, M, HS, -diag, kAll);
            ops.gemm_acc(dqkv + row * QKV + int64_t(h) * HS, QKV, dP.data(), kBc, 1, kj, QKV, M,
                         nk, HS, -kAll, diag);
          }
        for (int r = 0; r < nk; ++r) {
          float* dst = dqkv + (s0 + j0 + r) * QKV;
          std::memcpy(dst + int64_t(NH + g) * HS, dK.data() + r * HS, size_t(HS) * sizeof(float));
          std::memcpy(dst + int64_t(NH + NKV + g) * HS, dV.data() + r * HS, size_t(HS) * sizeof(float));
        }
      }
    }
  }
}

}  // namespace sft::cpu
