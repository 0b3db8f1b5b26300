// Our bf16 GEMM on AMX tiles (gemm.h, gemm_amx): Goto/BLIS blocking around a 32 x 32 register-
// tile kernel (4 C tiles, 2 A, 2 B: one tile load per tdpbf16ps). A is rounded to bf16 while it is
// packed, from any layout (fp32 or bf16, plain or transposed: a weight gradient's doutᵀ is packed
// straight from dout); B comes in the blocked layout of pack_b.h. C blocks accumulate over K in a
// per-thread scratch with a padded stride (C's own power-of-two row strides put every row of a
// tile in one L1 set) and are written to C once. Compiled with AMX flags; only where amx_usable().
#pragma GCC diagnostic push  // GCC 12 intrinsic headers warn about their own code (PR 105593)
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "backend/cpu/attention_amx_tiles.h"
#include "backend/cpu/gemm.h"
#include "backend/cpu/pack_b.h"
#include "backend/cpu/simd_avx512.h"
#include "core/aligned_vector.h"
#include "core/bf16_avx512.h"

namespace sft::cpu {

namespace {

using detail::tail_mask;

// Blocking: a thread's C block is kMc x kNc (its fp32 scratch stays in L2), K runs in passes of
// kKc (the B micro-panel, kKc x 32 bf16 = 16 KB, stays in L1 while the A panels stream from L2).
// Measured on a 2-core Xeon (AMX): 1.5 TFLOP/s per core on 1024 x 4096 x 768; larger kMc / kKc or
// whole-K passes straight into C were slower.
constexpr int64_t kMc = 256, kNc = 128, kKc = 256;
constexpr int64_t kT = 32;  // the kernel's C block (32 x 32) and k-block (32)

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// C block (32, 32) fp32 at c (stride ldc) = / += Apanel (32, 32 ks) · Bpanel (32 ks, 32) by the
// shared tile product: a holds k-blocks of 32 x 32 bf16 rows (1024 elements each); b BlockedB rows
// of one 64-wide column block (128 elements per k-pair row, 2048 per k-block), from the 32 columns.
inline void kernel(float* c, int64_t ldc, const uint16_t* a, const uint16_t* b, int64_t ks, bool accumulate) {
  amx::mm_32x32_blocked(c, ldc, a, kT, kT * kT, b, 2 * BlockedB::kN, ks, accumulate);
}

// 16 elements of a row as fp32 (masked): fp32 as is, bf16 widened exactly.
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

// 16 (k, k+1) pairs of A's rows m0..m0+15 from the transposed source, A(m, k) = src[k * ld + m]:
// lane i = (A(m0 + i, k), A(m0 + i, k + 1)) rounded. Rows past M (mask) and k past K are zero.
template <class Src>
inline __m512i pair_t(const Src* src, int64_t ld, int64_t k, int64_t K, int64_t m0, __mmask16 m) {
  const __m512 lo = k < K ? load16(src + k * ld + m0, m) : _mm512_setzero_ps();
  const __m512 hi = k + 1 < K ? load16(src + (k + 1) * ld + m0, m) : _mm512_setzero_ps();
  return simd::bf16_pairs(lo, hi);
}
inline __m512i pair_t(const uint16_t* src, int64_t ld, int64_t k, int64_t K, int64_t m0, __mmask16 m) {
  // bf16 values need no rounding: interleave the two rows' words
  const __m512i lo = k < K ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + k * ld + m0)) : _mm512_setzero_si512();
  const __m512i hi = k + 1 < K ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + (k + 1) * ld + m0))
                               : _mm512_setzero_si512();
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

// Packs A's rows [m0, m0 + rows) (rows <= kMc, the rest of the 32-row blocks zero) into dst:
// block (rb, kb) of 32 rows x 32 k at (rb * kblocks + kb) * 1024, row-major, k past K zero.
template <class Src>
void pack_a(const Src* src, int64_t ld, bool trans, int64_t M, int64_t K, int64_t m0, int64_t rows, uint16_t* dst) {
  const int64_t kblocks = round_up(K, kT) / kT, rblocks = round_up(rows, kT) / kT;
  if (!trans) {  // A(m, k) = src[m * ld + k]: 32 k of a row are 64 contiguous bytes of the block
    for (int64_t r = 0; r < rblocks * kT; ++r) {
      const int64_t m = m0 + r;
      uint16_t* row = dst + (r / kT) * kblocks * kT * kT + (r % kT) * kT;
      for (int64_t kb = 0; kb < kblocks; ++kb) {
        __m512i v = _mm512_setzero_si512();
        if (r < rows && m < M) {
          const Src* s = src + m * ld + kb * kT;
          v = simd::bf16_pack32(load16(s, tail_mask(K - kb * kT)), load16(s + 16, tail_mask(K - kb * kT - 16)));
        }
        _mm512_store_si512(row + kb * kT * kT, v);
      }
    }
    return;
  }
  // A(m, k) = src[k * ld + m]: 16 k-pairs x 16 rows as 32-bit lanes, transposed in registers
  for (int64_t rb = 0; rb < rblocks; ++rb)
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      uint16_t* blk = dst + (rb * kblocks + kb) * kT * kT;
      for (int64_t h = 0; h < 2; ++h) {
        const int64_t mh = m0 + rb * kT + 16 * h;
        const __mmask16 mask = tail_mask(std::min(M, m0 + rows) - mh);
        __m512i r[16];
        for (int p = 0; p < 16; ++p) r[p] = pair_t(src, ld, kb * kT + 2 * p, K, mh, mask);
        simd::transpose16(r);  // r[i] = row mh + i's 16 pairs = its 32 k
        for (int i = 0; i < 16; ++i) _mm512_store_si512(blk + (16 * h + i) * kT, r[i]);
      }
    }
}

// C rows [0, rows) x columns [0, cols) = / += the scratch block (+ bias).
void write_block(const GemmArgs& g, int64_t m0, int64_t n0, int64_t rows, int64_t cols, const float* cs,
                 int64_t ldcs) {
  for (int64_t r = 0; r < rows; ++r) {
    float* c = g.C + (m0 + r) * g.ldc + n0;
    const float* s = cs + r * ldcs;
    for (int64_t j = 0; j < cols; j += 16) {
      const __mmask16 m = tail_mask(cols - j);
      __m512 v = _mm512_load_ps(s + j);
      if (g.bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, g.bias + n0 + j));
      if (g.accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, c + j));
      // a fresh output is not read here again: stream it (no read-for-ownership of cold lines)
      if (!g.accumulate && m == 0xffff && (reinterpret_cast<uintptr_t>(c + j) & 63) == 0) _mm512_stream_ps(c + j, v);
      else _mm512_mask_storeu_ps(c + j, m, v);
    }
  }
}

}  // namespace

void gemm_amx(const GemmArgs& g, const uint16_t* a16, const uint16_t* b_blocked) {
  const int64_t M = g.M, N = g.N, K = g.K;
  if (M == 0 || N == 0) return;
  if (K == 0) {  // no products: C stays (accumulate) or becomes the bias (or zero)
    if (!g.accumulate)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) g.C[m * g.ldc + n] = g.bias ? g.bias[n] : 0.0f;
    return;
  }
  const int64_t Kp = round_up(K, kT), Np = round_up(N, BlockedB::kN), kblocks = Kp / kT;
  // C blocks: at least one per thread where the shape allows (halving the rows, then the columns)
  const int64_t threads = omp_get_max_threads();
  int64_t Mc = kMc, Nc = kNc;
  auto blocks = [&] { return ((M + Mc - 1) / Mc) * ((Np + Nc - 1) / Nc); };
  while (blocks() < threads && Mc > kT) Mc /= 2;
  while (blocks() < threads && Nc > BlockedB::kN) Nc /= 2;
  const int64_t n_jc = (Np + Nc - 1) / Nc, n_blocks = blocks(), ldcs = Nc + 16;
#pragma omp parallel if (n_blocks > 1)
  {
    thread_local AlignedVector<uint16_t> apack;
    thread_local AlignedVector<float> cs;
    if (apack.size() < size_t(Mc * Kp)) apack.resize(size_t(Mc * Kp));
    if (cs.size() < size_t(Mc * ldcs)) cs.resize(size_t(Mc * ldcs));
    amx::tiles_begin();
    int64_t packed = -1;  // the row block whose A panel apack holds
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      const int64_t ic = blk / n_jc, m0 = ic * Mc, n0 = (blk % n_jc) * Nc;
      const int64_t rows = std::min(Mc, M - m0), cols = std::min(Nc, Np - n0), rblocks = round_up(rows, kT) / kT;
      if (packed != ic) {
        if (a16) pack_a(a16, g.lda, g.trans_a, M, K, m0, rows, apack.data());
        else pack_a(g.A, g.lda, g.trans_a, M, K, m0, rows, apack.data());
        packed = ic;
      }
      for (int64_t pc = 0; pc < Kp; pc += kKc) {
        const int64_t ks = std::min(kKc, Kp - pc) / kT;
        for (int64_t jr = 0; jr < cols; jr += kT) {
          const int64_t n = n0 + jr;
          const uint16_t* b = b_blocked + (n / BlockedB::kN) * Kp * BlockedB::kN + (pc / kT) * kT * BlockedB::kN +
                              (n % BlockedB::kN) * 2;
          for (int64_t rb = 0; rb < rblocks; ++rb)
            kernel(cs.data() + rb * kT * ldcs + jr, ldcs, apack.data() + (rb * kblocks + pc / kT) * kT * kT, b, ks,
                   pc > 0);
        }
      }
      write_block(g, m0, n0, rows, std::min(cols, N - n0), cs.data(), ldcs);
    }
    _mm_sfence();  // this thread's streamed stores, before the region's end lets others read C
    amx::tiles_end();
  }
}

}  // namespace sft::cpu
