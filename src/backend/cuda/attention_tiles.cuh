// Shared pieces of the FlashAttention kernels (attention_forward.cu, attention_backward.cu): tile
// sizes, global → shared tile loads (fp32, or rounded to bf16 with an optional transposed copy),
// the bf16 tensor-core product mma.sync.m16n8k16 with its register layout.
// Fragment layouts are those of the PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating
// point type"; nothing here is taken from another implementation.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "backend/cuda/check.h"

namespace sft::cuda::attn {

constexpr int kThreads = 128;  // 4 warps per block in every attention kernel
constexpr float kLog2e = 1.44269504088896341f, kLn2 = 0.693147180559945309f;

// ---- tensor-core path (bf16 operands, HS 64 or 128): 64 × 64 tiles, a warp owns 16 rows ----
constexpr int kTile = 64;         // query rows and keys per tile
constexpr int kLdT = kTile + 8;   // row stride (bf16) of a transposed (HS, 64) tile
// Row stride (bf16) of a (64, HS) tile. The +8 pad (16 bytes) makes the 32-bit fragment loads of
// one warp (8 rows × 4 words) hit 32 distinct banks: (HS+8)/2 words ≡ 4 (mod 32) for HS 64, 128,
// and kLdT/2 = 36 ≡ 4 likewise.
template <int kHS> constexpr int kLdOf = kHS + 8;

// ---- FMA path (fp32, any HS multiple of 8 up to kMaxHS): 32 × 32 tiles ----
constexpr int kTileF = 32;
constexpr int kLdP = kTileF + 1;  // row stride (floats) of a (32, 32) score tile

// Lane coordinates in the mma layouts: gid = row within an 8-row group, tig = pair within a row.
struct Lane {
  int warp, gid, tig;
  __device__ Lane() : warp(threadIdx.x / 32), gid((threadIdx.x % 32) / 4), tig(threadIdx.x % 4) {}
};

// Two bf16 (round to nearest even) in one 32-bit word: lo in bits 0-15, as mma operands and
// little-endian memory both expect for the element with the lower index.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
         (uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
}
__device__ __forceinline__ uint16_t to_bf16(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
// 32-bit shared-memory access to an even-indexed pair of bf16.
__device__ __forceinline__ uint32_t ld_pair(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ void st_pair(uint16_t* p, uint32_t v) { *reinterpret_cast<uint32_t*>(p) = v; }

// d (16×8, fp32) += a (16×16, bf16, row-major) · b (16×8, bf16, "col": k pairs adjacent).
// Per lane (gid = lane/4, tig = lane%4), with (row, col) of the 16×16 / 16×8 matrices:
//   a[0] = (gid, 2tig..2tig+1)   a[1] = (gid+8, 2tig..)   a[2] = (gid, 2tig+8..)   a[3] = (gid+8, 2tig+8..)
//   b[0] = (k 2tig..2tig+1, n gid)   b[1] = (k 2tig+8..2tig+9, n gid)
//   d[0], d[1] = (gid, 2tig), (gid, 2tig+1)   d[2], d[3] = (gid+8, 2tig), (gid+8, 2tig+1)
// So the accumulators of two adjacent 16×8 blocks (columns 16c..16c+15) are, packed in pairs,
// exactly the a-fragment of columns 16c..16c+15 of the same rows: see a_from_acc.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// a-fragment (rows of this warp, k = 16c..16c+15) from fp32 accumulators acc[2c], acc[2c+1].
__device__ __forceinline__ void a_from_acc(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}
// a-fragment from a row-major bf16 tile: rows r0..r0+15 (r0 = first row of the warp's 16),
// columns k0..k0+15, row stride ld.
__device__ __forceinline__ void a_from_smem(uint32_t (&a)[4], const uint16_t* t, int ld, int r0, int k0,
                                            const Lane& ln) {
  const uint16_t* p = t + (r0 + ln.gid) * ld + k0 + 2 * ln.tig;
  a[0] = ld_pair(p);
  a[1] = ld_pair(p + 8 * ld);
  a[2] = ld_pair(p + 8);
  a[3] = ld_pair(p + 8 * ld + 8);
}
// b-fragment for n = n0..n0+7, k = k0..k0+15 from a tile stored n-major (row n holds its k values
// contiguously), row stride ld: e.g. K (keys, HS) when k = HS, or a transposed (HS, keys) tile.
__device__ __forceinline__ void b_from_smem(uint32_t (&b)[2], const uint16_t* t, int ld, int n0, int k0,
                                            const Lane& ln) {
  const uint16_t* p = t + (n0 + ln.gid) * ld + k0 + 2 * ln.tig;
  b[0] = ld_pair(p);
  b[1] = ld_pair(p + 8);
}

// Loads a (64, kHS) fp32 tile (rows of stride ld in global memory; rows >= n_valid read as 0),
// rounds it to bf16 and stores it row-major into nat (stride kLdOf<kHS>) and/or transposed into
// trans (trans[d * kLdT + r] = x[r][d]); either may be null. All 128 threads take part.
// A warp handles a 16-row × 8-column chunk: lane → rows 2rp, 2rp+1 (rp = lane%8), columns 2cp,
// 2cp+1 (cp = lane/8), so both the row-major pair stores (word ≡ 8rp + 4e + cp) and the transposed
// pair stores (word ≡ 4(2cp+e) + rp) of a warp fall in 32 distinct banks.
template <int kHS>
__device__ __forceinline__ void load_tile_bf16(const float* __restrict__ src, int64_t ld, int n_valid,
                                               uint16_t* nat, uint16_t* trans) {
  constexpr int kLd = kLdOf<kHS>, kColChunks = kHS / 8, kChunks = (kTile / 16) * kColChunks;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int chunk = warp; chunk < kChunks; chunk += kThreads / 32) {
    const int r = (chunk / kColChunks) * 16 + 2 * (lane % 8);
    const int d = (chunk % kColChunks) * 8 + 2 * (lane / 8);
    const float2 zero = make_float2(0.0f, 0.0f);
    const float2 x0 = r < n_valid ? *reinterpret_cast<const float2*>(src + r * ld + d) : zero;
    const float2 x1 = r + 1 < n_valid ? *reinterpret_cast<const float2*>(src + (r + 1) * ld + d) : zero;
    if (nat) {
      st_pair(nat + r * kLd + d, pack_bf16(x0.x, x0.y));
      st_pair(nat + (r + 1) * kLd + d, pack_bf16(x1.x, x1.y));
    }
    if (trans) {
      st_pair(trans + d * kLdT + r, pack_bf16(x0.x, x1.x));
      st_pair(trans + (d + 1) * kLdT + r, pack_bf16(x0.y, x1.y));
    }
  }
}

// Loads a (32, HS) fp32 tile into dst (row stride ldd floats), zero for rows >= n_valid and for
// columns HS..width-1 (width >= HS: the FMA kernels run their column loops to a compile-time
// width). Values are rounded to bf16 when round is set. Coalesced: consecutive threads read
// consecutive columns of a row.
__device__ __forceinline__ void load_tile_f32(float* dst, int ldd, const float* __restrict__ src, int64_t ld,
                                              int n_valid, int HS, int width, bool round) {
  for (int idx = threadIdx.x; idx < kTileF * width; idx += kThreads) {
    const int r = idx / width, d = idx % width;
    float x = r < n_valid && d < HS ? src[r * ld + d] : 0.0f;
    dst[r * ldd + d] = round ? round_bf16(x) : x;
  }
}

// Sum over the 4 lanes of a quad (lanes 4k..4k+3), which hold the pieces of one row.
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

// Whether the tensor-core kernels handle this call.
inline bool use_mma(bool bf16_operands, int HS) { return bf16_operands && (HS == 64 || HS == 128); }

}  // namespace sft::cuda::attn
