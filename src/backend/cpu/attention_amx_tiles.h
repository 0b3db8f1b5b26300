// Tile operations of the bf16 AMX FlashAttention (attention_tiles_amx.cpp, used by
// attention_amx.cpp; FlashAttention-2, Dao 2023). Tiles are 64 tokens; bf16 operands are packed
// either as A rows (M, K) or as B in VNNI pairs, B(k, n) = b[(k/2)·ldb + 2n + k%2]. Scores are
// transposed tiles Sᵀ (64 keys, 64 queries); query q sees key j when j < nk, q < M, j <= q + diag.
// Callable only where cpu_features().amx_usable(), between tiles_begin() and tiles_end().
#pragma once
#include <cstdint>

namespace sft::cpu::amx {

using bf16_t = uint16_t;
constexpr int kB = 64;  // queries per tile = keys per tile

void tiles_begin();  // this thread's tile configuration (all tiles 16 rows × 64 bytes)
void tiles_end();    // releases the tile state

// C (32, 32) fp32 = [C +] A (32, 32·ks) · B (32·ks, 32); strides in elements. A's k-block s (32
// rows of 32 k, row stride lda) starts at a + s·a_step; B's at b + s·16·ldb. The tile product of
// the attention (a_step 32: plain rows) and of our AMX GEMM (gemm_amx.cpp: k-blocked panels).
void mm_32x32_blocked(float* c, int64_t ldc, const bf16_t* a, int64_t lda, int64_t a_step, const bf16_t* b,
                      int64_t ldb, int64_t ks, bool accumulate);
inline void mm_32x32(float* c, int64_t ldc, const bf16_t* a, int64_t lda, const bf16_t* b, int64_t ldb, int ks,
                     bool accumulate) {
  mm_32x32_blocked(c, ldc, a, lda, 32, b, ldb, ks, accumulate);
}

// fp32 rows src (n <= 64 valid rows of a tile, stride ld, HS wide, HS % 32 == 0) to bf16, zero
// past n: rows (64, HS); cols = transposed (HS, 64); pairs_t = Bᵀ pairs (HS/2, 2·64), the B of
// products over HS; pairs = row pairs (32, 2·HS), the B of products over the 64 rows.
void pack_rows(bf16_t* dst, const float* src, int64_t ld, int n, int HS);
void pack_cols(bf16_t* dst, const float* src, int64_t ld, int n, int HS);
void pack_pairs_t(bf16_t* dst, const float* src, int64_t ld, int n, int HS);
void pack_pairs(bf16_t* dst, const float* src, int64_t ld, int n, int HS);

// Sᵀ (64, 64) = A (64 keys, HS) rows · Bᵀ pairs (HS, 64 queries), masked 32×32 blocks skipped.
void scores_t(float* S, const bf16_t* a, const bf16_t* b, int HS, int M, int nk, int diag);

// Online-softmax step on Sᵀ (log2 units, c = scale·log2 e): running max m and sum l (64),
// Oᵀ (HS, 64) columns rescaled, Pᵀ written in VNNI pairs pv (32, 2·64).
void softmax_t(const float* S, float* m, float* l, float* Ot, bf16_t* pv, int HS, int M, int nk,
               int diag, float c);

// Backward step: Pᵀ = 2^(Sᵀ·c − lse2), dSᵀ = Pᵀ∘(dPᵀ − D)·scale; Pᵀ, dSᵀ as bf16 rows (row
// stride ldp) and dSᵀ in VNNI pairs dsv (32, 2·64).
void grad_t(const float* S, const float* dP, const float* lse2, const float* D, bf16_t* pt,
            bf16_t* dst, int64_t ldp, bf16_t* dsv, int M, int nk, int diag, float c, float scale);

// Output rows (written once): dst[0, n) = src[0, n) (n % 16 == 0), and store_t below, use
// non-temporal stores where aligned; stores_done() fences them before other threads read.
void store_row(float* dst, const float* src, int n);
void stores_done();

// dst rows [0, n) (stride ld, HS wide) = srcᵀ (src (HS, ldt), columns [0, n)) · row_scale[row]
// (when given).
void store_t(float* dst, int64_t ld, const float* src, int64_t ldt, int n, int HS,
             const float* row_scale);

}  // namespace sft::cpu::amx
