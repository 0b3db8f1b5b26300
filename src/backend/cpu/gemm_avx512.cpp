// Our AVX-512 GEMM (gemm.h), blocked after Goto/BLIS: op(B) is packed into 48-column panels sized
// for L2, op(A) into 8-row panels that stay in L1, and an 8x48 tile of fp32 accumulators (24 zmm)
// runs vfmadd231ps (fp32) or vdpbf16ps on k-pairs (bf16, "VNNI" panels holding (b[k][n], b[k+1][n])
// in one 32-bit lane). bf16 rounding happens while packing (also for fp32 math on bf16-rounded
// operands, round_bf16); B may be given as bf16 values (B16). Threads take slices of M or of N, each
// with private packing buffers. Compiled with AVX-512 flags; called after gemm_avx512_supported().
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/gemm.h"
#include "backend/cpu/simd_avx512.h"
#include "core/bf16_avx512.h"
#include "core/check.h"

namespace sft::cpu {
namespace {

using simd::bf16_pack32;
using simd::bf16_pairs;
using simd::round_bf16;
using simd::transpose16;
using detail::tail_mask;

constexpr int MR = 8;         // rows of the register tile
constexpr int NR = 48;        // columns of the register tile
constexpr int NV = NR / 16;   // zmm per tile row
// Blocking along k in "units" of 4 bytes (one fp32, or one bf16 pair): the A micro-panel (MR x
// KU units) stays in L1; the packed B block (KU x NC units) is sized to about half of L2.
constexpr int64_t KU = 256;
constexpr int64_t B_BLOCK_UNITS = 128 * 1024;  // 512 KiB

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }


// 16 consecutive values of fp32 or bf16 (uint16 bits) data as fp32, lanes past the mask zero.
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

// ---- packing. Units: fp32 -> one float, bf16 -> one k-pair (uint32). kk = units of a k-block. ----

// op(B) (k0.., j0..) -> panels [nc/NR][kk][NR], zero past kc and nc. B stored (K, N), fp32 or bf16
// (T); round: fp32 units rounded to bf16.
template <bool BF16, typename T>
[[gnu::noinline]] void pack_b_rows(uint32_t* bp, const T* B, int64_t ldb, int64_t k0, int64_t kc,
                                   int64_t j0, int64_t nc, bool round) {
  const int64_t kk = BF16 ? (kc + 1) / 2 : kc, panels = (nc + NR - 1) / NR;
  for (int64_t p = 0; p < kk; ++p) {
    const T* r0 = B + (k0 + (BF16 ? 2 * p : p)) * ldb + j0;
    const T* r1 = BF16 && 2 * p + 1 < kc ? r0 + ldb : nullptr;
    for (int64_t q = 0; q < panels; ++q)
      for (int v = 0; v < NV; ++v) {
        const int64_t j = q * NR + v * 16;
        const __mmask16 m = tail_mask(nc - j);
        const __m512 x0 = load16(r0 + j, m);
        uint32_t* dst = bp + (q * kk + p) * NR + v * 16;
        if constexpr (BF16) {
          const __m512 x1 = r1 ? load16(r1 + j, m) : _mm512_setzero_ps();
          _mm512_storeu_si512(dst, bf16_pairs(x0, x1));
        } else {
          _mm512_storeu_ps(dst, round ? round_bf16(x0) : x0);
        }
      }
  }
}

// The same from B stored (N, K): 16 columns x 16 units at a time, transposed in registers.
template <bool BF16, typename T>
[[gnu::noinline]] void pack_b_cols(uint32_t* bp, const T* B, int64_t ldb, int64_t k0, int64_t kc,
                                   int64_t j0, int64_t nc, bool round) {
  const int64_t kk = BF16 ? (kc + 1) / 2 : kc, panels = (nc + NR - 1) / NR;
  for (int64_t q = 0; q < panels; ++q)
    for (int v = 0; v < NV; ++v) {
      const int64_t j = q * NR + v * 16;
      for (int64_t p0 = 0; p0 < kk; p0 += 16) {
        __m512i r[16];
        const int64_t k = BF16 ? 2 * p0 : p0;  // first k of this chunk within the block
        for (int i = 0; i < 16; ++i) {
          if (j + i >= nc) {
            r[i] = _mm512_setzero_si512();
            continue;
          }
          const T* src = B + (j0 + j + i) * ldb + k0 + k;
          if constexpr (BF16) {
            const __m512 x0 = load16(src, tail_mask(kc - k));
            const __m512 x1 = load16(src + 16, tail_mask(kc - k - 16));
            r[i] = bf16_pack32(x0, x1);
          } else {
            const __m512 x = load16(src, tail_mask(kc - k));
            r[i] = _mm512_castps_si512(round ? round_bf16(x) : x);
          }
        }
        transpose16(r);
        for (int64_t p = 0; p < 16 && p0 + p < kk; ++p)
          _mm512_storeu_si512(bp + (q * kk + p0 + p) * NR + v * 16, r[p]);
      }
    }
}

// One row panel of op(A) for A stored (M, K): rows src[i*lda + k], k < kc -> bf16 rows of
// kk_pad units (A_ROWS layout, zero pair padding).
[[gnu::noinline]] void pack_a_rows_bf16(uint32_t* ap, int64_t kk_pad, const float* src, int64_t lda,
                                        int rows, int64_t kc) {
  for (int i = 0; i < rows; ++i) {
    const float* s = src + i * lda;
    uint32_t* dst = ap + i * kk_pad;
    for (int64_t k = 0; k < kc; k += 16) {
      const __m512 x = kc - k >= 16 ? _mm512_loadu_ps(s + k)
                                    : _mm512_maskz_loadu_ps(tail_mask(kc - k), s + k);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k / 2), simd::bf16_16(x));
    }
  }
}

// The same in fp32 units rounded to bf16 (round_bf16): kk_pad floats per row.
[[gnu::noinline]] void pack_a_rows_round(uint32_t* ap, int64_t kk_pad, const float* src, int64_t lda, int rows,
                                         int64_t kc) {
  for (int i = 0; i < rows; ++i) {
    const float* s = src + i * lda;
    float* dst = reinterpret_cast<float*>(ap + i * kk_pad);
    for (int64_t k = 0; k < kc; k += 16)
      _mm512_storeu_ps(dst + k, round_bf16(_mm512_maskz_loadu_ps(tail_mask(kc - k), s + k)));
  }
}

// Row panels of op(A) (rows m < cols <= A_GROUP) for A stored (K, M): src[k*lda + m], k < kc ->
// panels [cols/MR][kk][MR] (A_PANELS layout), rows past cols zero.
constexpr int A_GROUP = 64;
template <bool BF16>
[[gnu::noinline]] void pack_a_cols(uint32_t* ap, const float* src, int64_t lda, int cols, int64_t kc, bool round) {
  const int64_t kk = BF16 ? (kc + 1) / 2 : kc;
  for (int64_t p = 0; p < kk; ++p) {
    const float* r0 = src + (BF16 ? 2 * p : p) * lda;
    const bool pair = BF16 && 2 * p + 1 < kc;
    for (int c = 0; c < cols; c += 2 * MR) {
      const __mmask16 m = tail_mask(cols - c);
      const __m512 x0 = _mm512_maskz_loadu_ps(m, r0 + c);
      __m512i y;
      if constexpr (BF16) {
        y = bf16_pairs(x0, pair ? _mm512_maskz_loadu_ps(m, r0 + lda + c) : _mm512_setzero_ps());
      } else {
        y = _mm512_castps_si512(round ? round_bf16(x0) : x0);
      }
      uint32_t* dst = ap + (c / MR * kk + p) * MR;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_castsi512_si256(y));
      if (cols - c > MR)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + kk * MR), _mm512_extracti64x4_epi64(y, 1));
    }
  }
}

// ---- micro-kernel: acc (MR x NR) = Σ_p a(r, p) b(p, c) over kk units, then C = [C +] acc [+ bias]
// for rows < mv and columns < nv. a(r, p) is a[r*a_rs + p] (A_ROWS) or a[p*MR + r] (panels).
// With PF it also readies the next A panel, about one line per step: its source (MR rows of
// src_rs bytes for A_ROWS, else the rows k of 8 columns) into L2, and its packed destination
// (kk*MR units) for writing, so that packing it neither waits on loads nor on store misses. ----
struct Ahead {
  const char* src = nullptr;
  int64_t src_rs = 0;
  char* dst = nullptr;
};

inline void prefetch_for_write(const char* p) { asm volatile("prefetchw %0" : : "m"(*p)); }

template <bool BF16, bool A_ROWS, bool PF>
void micro_kernel(int64_t kk, const uint32_t* a, int64_t a_rs, int mv, const uint32_t* b, float* c,
                  int64_t ldc, int nv, const float* bias, bool add_c, const Ahead& ahead) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int r = 0; r < mv; ++r)  // the C tile is needed at the end: start fetching it now
    for (int v = 0; v < NV; ++v) prefetch_for_write(reinterpret_cast<const char*>(c + r * ldc + v * 16));
  const uint32_t* ar[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) ar[r] = a + (A_ROWS ? std::min(r, mv - 1) * a_rs : r);
  for (int64_t p = 0; p < kk; ++p) {
    if constexpr (PF) {
      const char* src = ahead.src;
      const int64_t rs = ahead.src_rs;
      if constexpr (A_ROWS) {
        _mm_prefetch(src + (p & (MR - 1)) * rs + (p >> (BF16 ? 3 : 4)) * 64, _MM_HINT_T1);
      } else {
        _mm_prefetch(src + (BF16 ? 2 * p : p) * rs, _MM_HINT_T1);
        if (BF16) _mm_prefetch(src + (2 * p + 1) * rs, _MM_HINT_T1);
      }
      if (ahead.dst && (p & 1) == 0) prefetch_for_write(ahead.dst + p * 32);
    }
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + p * NR + v * 16);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const uint32_t* ap = A_ROWS ? ar[r] + p : ar[r] + p * MR;
      if constexpr (BF16) {
        const __m512bh av = (__m512bh)_mm512_set1_epi32(int(*ap));
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, (__m512bh)bv[v]);
      } else {
        float x;
        std::memcpy(&x, ap, 4);
        const __m512 av = _mm512_set1_ps(x);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
      }
    }
  }
  if (nv == NR) {  // whole tile: plain loads and stores (masked stores are slow on some cores)
    __m512 bs[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bs[v] = bias ? _mm512_loadu_ps(bias + v * 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      if (r >= mv) break;
      float* cr = c + r * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        __m512 x = _mm512_add_ps(acc[r][v], bs[v]);
        if (add_c) x = _mm512_add_ps(x, _mm512_loadu_ps(cr + v * 16));
        _mm512_storeu_ps(cr + v * 16, x);
      }
    }
    return;
  }
  __mmask16 mk[NV];
  __m512 bs[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    mk[v] = tail_mask(nv - v * 16);
    bs[v] = bias ? _mm512_maskz_loadu_ps(mk[v], bias + v * 16) : _mm512_setzero_ps();
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    if (r >= mv) break;
    float* cr = c + r * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (v * 16 >= nv) break;
      __m512 x = _mm512_add_ps(acc[r][v], bs[v]);
      if (add_c) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mk[v], cr + v * 16));
      _mm512_mask_storeu_ps(cr + v * 16, mk[v], x);
    }
  }
}

// Growing 64-byte-aligned scratch, one per thread and role.
struct Scratch {
  uint32_t* p = nullptr;
  size_t cap = 0;
  uint32_t* get(size_t units) {
    if (units > cap) {
      std::free(p);
      cap = units;
      p = static_cast<uint32_t*>(std::aligned_alloc(64, size_t(round_up(int64_t(units) * 4, 64))));
      SFT_CHECK(p, "cpu", "out of memory for GEMM packing buffers ({} bytes)", units * 4);
    }
    return p;
  }
  ~Scratch() { std::free(p); }
};
thread_local Scratch a_scratch, b_scratch;

// k-blocks of at most KU units, evenly sized, and n-blocks whose packed op(B) fills B_BLOCK_UNITS.
struct Blocking {
  int64_t kc_max, ku_max, nc_max;
  Blocking(int64_t K, bool bf16) {
    const int64_t k_units = bf16 ? (K + 1) / 2 : K;
    const int64_t kblocks = std::max<int64_t>(1, (k_units + KU - 1) / KU);
    kc_max = round_up((K + kblocks - 1) / kblocks, 16);
    ku_max = bf16 ? kc_max / 2 : kc_max;
    nc_max = std::max<int64_t>(NR, B_BLOCK_UNITS / ku_max / NR * NR);
  }
  size_t b_units(int64_t n) const { return size_t(round_up(std::min(nc_max, n), NR) * ku_max); }
};

// Rows [m0, m1) x columns [n0, n1) of C on the calling thread. Loops: k-blocks, n-blocks (pack
// op(B)), row panels (packed during the first n-block, kept for the others), 48-column panels.
template <bool BF16>
void gemm_block(const GemmArgs& g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t mt = m1 - m0, K = g.K;
  const Blocking bl(K, BF16);
  const int64_t kc_max = bl.kc_max, ku_max = bl.ku_max, nc_max = bl.nc_max;
  const bool a_rows = !g.trans_a, round = !BF16 && g.round_bf16;
  uint32_t* ap = nullptr;
  if (g.trans_a) ap = a_scratch.get(size_t(round_up(mt, 2 * MR) * ku_max));
  else if (BF16 || round) ap = a_scratch.get(size_t(mt * ku_max));
  uint32_t* bp = b_scratch.get(bl.b_units(n1 - n0));
  for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
    const int64_t kc = std::min(kc_max, K - k0), kk = BF16 ? (kc + 1) / 2 : kc;
    const uint32_t* a = ap;
    int64_t a_rs = 0;
    if (a_rows && BF16) {
      a_rs = round_up(kc, 16) / 2;
    } else if (a_rows && round) {
      a_rs = round_up(kc, 16);
    } else if (a_rows) {
      a = reinterpret_cast<const uint32_t*>(g.A + m0 * g.lda + k0);  // fp32 rows are read in place
      a_rs = g.lda;
    }
    const bool first_k = k0 == 0;
    for (int64_t j0 = n0; j0 < n1; j0 += nc_max) {
      const int64_t nc = std::min(nc_max, n1 - j0);
      const bool first_j = j0 == n0;
      if (g.B16 && g.trans_b) pack_b_cols<BF16>(bp, g.B16, g.ldb, k0, kc, j0, nc, round);
      else if (g.B16) pack_b_rows<BF16>(bp, g.B16, g.ldb, k0, kc, j0, nc, round);
      else if (g.trans_b) pack_b_cols<BF16>(bp, g.B, g.ldb, k0, kc, j0, nc, round);
      else pack_b_rows<BF16>(bp, g.B, g.ldb, k0, kc, j0, nc, round);
      for (int64_t i = 0; i < mt; i += MR) {
        const int mv = int(std::min<int64_t>(MR, mt - i));
        // In the first n-block pack this panel, and have its first kernel call ready the next
        // one (for trans_a, packed A_GROUP rows at a time, each panel readies its slice).
        Ahead ahead{.src = nullptr, .src_rs = g.lda * 4, .dst = nullptr};
        if (first_j) {
          if (g.trans_a) {
            const int cols = int(std::min<int64_t>(A_GROUP, mt - i));
            if (i % A_GROUP == 0) pack_a_cols<BF16>(ap + i * kk, g.A + k0 * g.lda + m0 + i, g.lda, cols, kc, round);
            if (i + A_GROUP < mt) {
              ahead.src = reinterpret_cast<const char*>(g.A + k0 * g.lda + m0 + i + A_GROUP);
              ahead.dst = reinterpret_cast<char*>(ap + (i + A_GROUP) * kk);
            }
          } else {
            if (BF16) pack_a_rows_bf16(ap + i * a_rs, a_rs, g.A + (m0 + i) * g.lda + k0, g.lda, mv, kc);
            else if (round) pack_a_rows_round(ap + i * a_rs, a_rs, g.A + (m0 + i) * g.lda + k0, g.lda, mv, kc);
            if (i + MR < mt) {
              ahead.src = reinterpret_cast<const char*>(g.A + (m0 + i + MR) * g.lda + k0);
              if (BF16 || round) ahead.dst = reinterpret_cast<char*>(ap + (i + MR) * a_rs);
            }
          }
        }
        float* c = g.C + (m0 + i) * g.ldc + j0;
        for (int64_t j = 0; j < nc; j += NR) {
          const int nv = int(std::min<int64_t>(NR, nc - j));
          const uint32_t* bj = bp + (j / NR) * kk * NR;
          const float* bias = first_k && g.bias ? g.bias + j0 + j : nullptr;
          const bool add_c = !first_k || g.accumulate;
          const bool pf = ahead.src && j == 0;  // the panel's first call readies the next one
          const uint32_t* ai = a_rows ? a + i * a_rs : a + i * kk;
          if (a_rows && pf)
            micro_kernel<BF16, true, true>(kk, ai, a_rs, mv, bj, c + j, g.ldc, nv, bias, add_c, ahead);
          else if (a_rows)
            micro_kernel<BF16, true, false>(kk, ai, a_rs, mv, bj, c + j, g.ldc, nv, bias, add_c, ahead);
          else if (pf)
            micro_kernel<BF16, false, true>(kk, ai, 0, mv, bj, c + j, g.ldc, nv, bias, add_c, ahead);
          else
            micro_kernel<BF16, false, false>(kk, ai, 0, mv, bj, c + j, g.ldc, nv, bias, add_c, ahead);
        }
      }
    }
  }
}

// Split C over the threads along M (each thread packs all of op(B)) or along N (each packs all of
// op(A)), whichever packs less per thread; slices are whole register tiles. (Sharing the packed
// op(B) of an M split between threads, with a barrier per block, measured no faster on 2 cores.)
template <bool BF16>
void gemm_threads(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0) {  // empty sum: C = [C +] bias
    for (int64_t m = 0; m < g.M; ++m)
      for (int64_t n = 0; n < g.N; ++n)
        g.C[m * g.ldc + n] = (g.accumulate ? g.C[m * g.ldc + n] : 0.0f) + (g.bias ? g.bias[n] : 0.f);
    return;
  }
  const double flops = 2.0 * double(g.M) * double(g.N) * double(g.K);
  const int64_t m_tiles = (g.M + MR - 1) / MR, n_tiles = (g.N + NR - 1) / NR;
  const bool split_n = g.N > g.M ? n_tiles >= 2 : m_tiles < 2;
  const int64_t tiles = split_n ? n_tiles : m_tiles;
  const int64_t max_threads = flops < 4e6 ? 1 : omp_get_max_threads();  // tiny GEMMs stay on one
  const int nt = int(std::min(max_threads, tiles));
  if (nt <= 1) {
    gemm_block<BF16>(g, 0, g.M, 0, g.N);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int n = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t t0 = tiles * t / n, t1 = tiles * (t + 1) / n;
    if (split_n) gemm_block<BF16>(g, 0, g.M, t0 * NR, std::min(g.N, t1 * NR));
    else gemm_block<BF16>(g, t0 * MR, std::min(g.M, t1 * MR), 0, g.N);
  }
}

}  // namespace

void gemm_f32_avx512(const GemmArgs& g) { gemm_threads<false>(g); }
void gemm_bf16_avx512(const GemmArgs& g) { gemm_threads<true>(g); }

}  // namespace sft::cpu
