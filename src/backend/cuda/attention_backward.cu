// FlashAttention backward on the GPU (FlashAttention-2, Alg. 2): D = rowsum(dO ∘ O), then one block
// per (key tile, kv head, sequence) keeps K, V, dK, dV on chip and loops over the group's query heads
// and their query tiles from the diagonal on, recomputing P = 2^(S·c - lse·log2 e), dS = P∘(dP - D)·scale.
// dK, dV are written once by their block (deterministic); dQ gets fp32 atomics from every key tile into
// dqkv's q part (zeroed first), as FlashAttention-2 does: a second pass per query tile would redo S, dP.
#include <algorithm>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/attention_tiles.cuh"

namespace sft::cuda {

namespace {

using namespace attn;

// D (N, NH) = Σ_e dout·out per row and head, one warp per (row, head); dout rounded to bf16 when
// the tiles use it so, which keeps Σ_j dS_ij = 0 as in exact arithmetic.
__global__ void dsum_kernel(float* __restrict__ dsum, const float* __restrict__ dout, const float* __restrict__ out,
                            int64_t N, int NH, int HS, bool round) {
  const int64_t item = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;  // n * NH + h
  if (item >= N * NH) return;                                                       // uniform per warp
  const int64_t base = (item / NH) * NH * HS + (item % NH) * HS;
  float acc = 0.0f;
  for (int e = threadIdx.x % 32; e < HS; e += 32) {
    const float g = dout[base + e];
    acc += (round ? round_bf16(g) : g) * out[base + e];
  }
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (threadIdx.x % 32 == 0) dsum[item] = acc;
}

// ---- tensor cores: warp w owns keys 16w..16w+15 of the tile for S^T, dP^T, dK, dV (per lane
// keys gid, gid+8) and query rows 16w..16w+15 for dQ. ----
template <int kHS>
constexpr size_t bwd_mma_smem() {  // k, v, q, dO (64, HS) | kT, qT, dOT (HS, 64) | dS (64, 64) | lse, D (64)
  return (size_t(4) * kTile * kLdOf<kHS> + size_t(3) * kHS * kLdT + size_t(kTile) * kLdT) * sizeof(uint16_t) +
         size_t(2) * kTile * sizeof(float);
}

template <int kHS>
__global__ void __launch_bounds__(kThreads)
    bwd_mma_kernel(float* __restrict__ dqkv, const float* __restrict__ dout, const float* __restrict__ qkv,
                   const float* __restrict__ lse, const float* __restrict__ dsum,
                   const int32_t* __restrict__ cu_seqlens, int NH, int NKV, float c, float scale) {
  constexpr int kLd = kLdOf<kHS>;
  extern __shared__ __align__(16) unsigned char smem[];
  uint16_t* k_s = reinterpret_cast<uint16_t*>(smem);  // (64 keys, HS)     row stride kLd
  uint16_t* v_s = k_s + kTile * kLd;                   // (64 keys, HS)
  uint16_t* q_s = v_s + kTile * kLd;                   // (64 queries, HS)
  uint16_t* do_s = q_s + kTile * kLd;                  // (64 queries, HS)
  uint16_t* kt_s = do_s + kTile * kLd;                 // (HS, 64 keys)     row stride kLdT
  uint16_t* qt_s = kt_s + kHS * kLdT;                  // (HS, 64 queries)
  uint16_t* dot_s = qt_s + kHS * kLdT;                 // (HS, 64 queries)
  uint16_t* ds_s = dot_s + kHS * kLdT;                 // (64 queries, 64 keys) dS, row stride kLdT
  float* lse_s = reinterpret_cast<float*>(ds_s + kTile * kLdT);  // (64) lse of the query tile, log2 units
  float* d_s = lse_s + kTile;                                    // (64) D of the query tile

  const int64_t s0 = cu_seqlens[blockIdx.z];
  const int T = int(cu_seqlens[blockIdx.z + 1] - s0);
  const int j0 = int(blockIdx.x) * kTile;  // low key tiles see the most queries: they start first
  if (j0 >= T) return;                     // uniform over the block
  const int nk = min(kTile, T - j0), g = blockIdx.y, group = NH / NKV;
  const int64_t QKV = int64_t(NH + 2 * NKV) * kHS, OC = int64_t(NH) * kHS;
  const Lane ln;
  const int r0 = 16 * ln.warp;  // first local key (S^T, dK, dV) and first local query (dQ) of this warp

  const float* kv = qkv + (s0 + j0) * QKV;
  load_tile_bf16<kHS>(kv + int64_t(NH + g) * kHS, QKV, nk, k_s, kt_s);
  load_tile_bf16<kHS>(kv + int64_t(NH + NKV + g) * kHS, QKV, nk, v_s, nullptr);

  float dk[kHS / 8][4] = {}, dv[kHS / 8][4] = {};  // keys (r0+gid, r0+gid+8) × columns 8db + 2tig + {0,1}

  for (int h = g * group; h < (g + 1) * group; ++h)
    for (int i0 = j0; i0 < T; i0 += kTile) {  // query tiles from the diagonal on (tiles are aligned)
      const int M = min(kTile, T - i0);
      __syncthreads();  // the previous query tile's smem reads are done
      load_tile_bf16<kHS>(qkv + (s0 + i0) * QKV + int64_t(h) * kHS, QKV, M, q_s, qt_s);
      load_tile_bf16<kHS>(dout + (s0 + i0) * OC + int64_t(h) * kHS, OC, M, do_s, dot_s);
      if (threadIdx.x < kTile) {
        const int r = threadIdx.x;
        lse_s[r] = r < M ? lse[(s0 + i0 + r) * NH + h] * kLog2e : 0.0f;
        d_s[r] = r < M ? dsum[(s0 + i0 + r) * NH + h] : 0.0f;
      }
      __syncthreads();  // also publishes k_s, kt_s, v_s on the first pass

      // S^T = K Q^T and dP^T = V dO^T (16 keys × 64 queries per warp; k runs over HS).
      float st[8][4] = {}, dpt[8][4] = {};
#pragma unroll
      for (int kk = 0; kk < kHS / 16; ++kk) {
        uint32_t ak[4], av[4];
        a_from_smem(ak, k_s, kLd, r0, 16 * kk, ln);
        a_from_smem(av, v_s, kLd, r0, 16 * kk, ln);
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
          uint32_t b[2];
          b_from_smem(b, q_s, kLd, 8 * nb, 16 * kk, ln);
          mma_bf16(st[nb], ak, b);
          b_from_smem(b, do_s, kLd, 8 * nb, 16 * kk, ln);
          mma_bf16(dpt[nb], av, b);
        }
      }
      // P^T and dS^T in place. Query i0+q sees key j0+key iff q < M, key < nk, j0+key <= i0+q;
      // everything else is exactly 0 (selected, never computed from padding).
#pragma unroll
      for (int nb = 0; nb < 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int q = 8 * nb + 2 * ln.tig + (e & 1), key = r0 + ln.gid + 8 * (e >> 1);
          const bool ok = q < M && key < nk && j0 + key <= i0 + q;
          const float p = ok ? exp2f(st[nb][e] * c - lse_s[q]) : 0.0f;
          dpt[nb][e] = ok ? p * (dpt[nb][e] - d_s[q]) * scale : 0.0f;
          st[nb][e] = p;
        }
      // dV += P^T dO and dK += dS^T Q: a-fragments from the accumulators (k = queries),
      // b-fragments from the transposed dO and Q tiles.
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) {
        uint32_t ap[4], ads[4];
        a_from_acc(ap, st[2 * kk], st[2 * kk + 1]);
        a_from_acc(ads, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
        for (int db = 0; db < kHS / 8; ++db) {
          uint32_t b[2];
          b_from_smem(b, dot_s, kLdT, 8 * db, 16 * kk, ln);
          mma_bf16(dv[db], ap, b);
          b_from_smem(b, qt_s, kLdT, 8 * db, 16 * kk, ln);
          mma_bf16(dk[db], ads, b);
        }
      }
      // dS (queries × keys) to shared memory for dQ, which contracts over keys held by all warps.
#pragma unroll
      for (int nb = 0; nb < 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int q = 8 * nb + 2 * ln.tig + (e & 1), key = r0 + ln.gid + 8 * (e >> 1);
          ds_s[q * kLdT + key] = to_bf16(dpt[nb][e]);
        }
      __syncthreads();  // ds_s complete

      // dQ (16 queries × HS per warp) = dS K, in 64-column chunks to bound registers; added to
      // dqkv with atomics (other key tiles add to the same rows).
#pragma unroll
      for (int c0 = 0; c0 < kHS; c0 += 64) {
        float dq[8][4] = {};
#pragma unroll
        for (int kk = 0; kk < kTile / 16; ++kk) {
          uint32_t a[4];
          a_from_smem(a, ds_s, kLdT, r0, 16 * kk, ln);
#pragma unroll
          for (int nb = 0; nb < 8; ++nb) {
            uint32_t b[2];
            b_from_smem(b, kt_s, kLdT, c0 + 8 * nb, 16 * kk, ln);
            mma_bf16(dq[nb], a, b);
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int q = r0 + ln.gid + 8 * r;
          if (q >= M) continue;
          float* dst = dqkv + (s0 + i0 + q) * QKV + int64_t(h) * kHS + c0 + 2 * ln.tig;
#pragma unroll
          for (int nb = 0; nb < 8; ++nb) {
            atomicAdd(dst + 8 * nb, dq[nb][2 * r]);
            atomicAdd(dst + 8 * nb + 1, dq[nb][2 * r + 1]);
          }
        }
      }
    }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = r0 + ln.gid + 8 * r;
    if (key >= nk) continue;
    float* dst = dqkv + (s0 + j0 + key) * QKV + 2 * ln.tig;
#pragma unroll
    for (int db = 0; db < kHS / 8; ++db) {
      *reinterpret_cast<float2*>(dst + int64_t(NH + g) * kHS + 8 * db) = make_float2(dk[db][2 * r], dk[db][2 * r + 1]);
      *reinterpret_cast<float2*>(dst + int64_t(NH + NKV + g) * kHS + 8 * db) =
          make_float2(dv[db][2 * r], dv[db][2 * r + 1]);
    }
  }
}

// ---- FMA path: thread t owns key t/4 of the 32-key tile (S^T, dK, dV) and query t/4 of the
// query tile (dQ); its quad splits queries (q = qd + 4qq) and columns (col = qd + 4cc). ----
template <int kMaxHS>
constexpr size_t bwd_fma_smem() {  // k, v, q, dO (32, kMaxHS+1) | P^T, dS^T (32, 33) | lse, D (32), fp32
  return (size_t(4) * kTileF * (kMaxHS + 1) + size_t(2) * kTileF * kLdP + size_t(2) * kTileF) * sizeof(float);
}

template <int kMaxHS>
__global__ void __launch_bounds__(kThreads)
    bwd_fma_kernel(float* __restrict__ dqkv, const float* __restrict__ dout, const float* __restrict__ qkv,
                   const float* __restrict__ lse, const float* __restrict__ dsum,
                   const int32_t* __restrict__ cu_seqlens, int NH, int NKV, int HS, float c, float scale,
                   bool round) {
  constexpr int ld = kMaxHS + 1;  // odd stride: 8 rows of a warp fall in distinct banks
  extern __shared__ __align__(16) float smem_f[];
  float* k_s = smem_f;                  // (32 keys, kMaxHS), columns >= HS zero
  float* v_s = k_s + kTileF * ld;       // (32 keys, kMaxHS)
  float* q_s = v_s + kTileF * ld;       // (32 queries, kMaxHS)
  float* do_s = q_s + kTileF * ld;      // (32 queries, kMaxHS)
  float* pt_s = do_s + kTileF * ld;     // (32 keys, 32 queries) P^T
  float* dst_s = pt_s + kTileF * kLdP;  // (32 keys, 32 queries) dS^T
  float* lse_s = dst_s + kTileF * kLdP; // (32) log2 units
  float* d_s = lse_s + kTileF;          // (32)

  const int64_t s0 = cu_seqlens[blockIdx.z];
  const int T = int(cu_seqlens[blockIdx.z + 1] - s0);
  const int j0 = int(blockIdx.x) * kTileF;
  if (j0 >= T) return;
  const int nk = min(kTileF, T - j0), g = blockIdx.y, group = NH / NKV;
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS;
  const int me = threadIdx.x / 4, qd = threadIdx.x % 4;  // key row (S^T, dK, dV) / query row (dQ)

  const float* kv = qkv + (s0 + j0) * QKV;
  load_tile_f32(k_s, ld, kv + int64_t(NH + g) * HS, QKV, nk, HS, kMaxHS, round);
  load_tile_f32(v_s, ld, kv + int64_t(NH + NKV + g) * HS, QKV, nk, HS, kMaxHS, round);
  float dk[kMaxHS / 4] = {}, dv[kMaxHS / 4] = {};

  for (int h = g * group; h < (g + 1) * group; ++h)
    for (int i0 = j0; i0 < T; i0 += kTileF) {
      const int M = min(kTileF, T - i0);
      __syncthreads();  // previous query tile's smem reads are done
      load_tile_f32(q_s, ld, qkv + (s0 + i0) * QKV + int64_t(h) * HS, QKV, M, HS, kMaxHS, round);
      load_tile_f32(do_s, ld, dout + (s0 + i0) * OC + int64_t(h) * HS, OC, M, HS, kMaxHS, round);
      if (threadIdx.x < kTileF) {
        const int r = threadIdx.x;
        lse_s[r] = r < M ? lse[(s0 + i0 + r) * NH + h] * kLog2e : 0.0f;
        d_s[r] = r < M ? dsum[(s0 + i0 + r) * NH + h] : 0.0f;
      }
      __syncthreads();

      float st[8] = {}, dpt[8] = {};
      for (int d = 0; d < HS; ++d) {
        const float kd = k_s[me * ld + d], vd = v_s[me * ld + d];
#pragma unroll
        for (int qq = 0; qq < 8; ++qq) {
          st[qq] += kd * q_s[(qd + 4 * qq) * ld + d];
          dpt[qq] += vd * do_s[(qd + 4 * qq) * ld + d];
        }
      }
#pragma unroll
      for (int qq = 0; qq < 8; ++qq) {
        const int q = qd + 4 * qq;
        const bool ok = q < M && me < nk && j0 + me <= i0 + q;
        const float p = ok ? exp2f(st[qq] * c - lse_s[q]) : 0.0f;
        pt_s[me * kLdP + q] = p;
        dst_s[me * kLdP + q] = ok ? p * (dpt[qq] - d_s[q]) * scale : 0.0f;
      }
      __syncthreads();  // P^T, dS^T complete

      for (int q = 0; q < M; ++q) {  // dV += P^T dO, dK += dS^T Q (rows >= M are zero)
        const float p = pt_s[me * kLdP + q], ds = dst_s[me * kLdP + q];
#pragma unroll
        for (int cc = 0; cc < kMaxHS / 4; ++cc) {
          dv[cc] += p * do_s[q * ld + qd + 4 * cc];
          dk[cc] += ds * q_s[q * ld + qd + 4 * cc];
        }
      }
      constexpr int kChunk = kMaxHS / 4 < 16 ? kMaxHS / 4 : 16;  // dQ columns per pass (registers)
#pragma unroll
      for (int c0 = 0; c0 < kMaxHS / 4; c0 += kChunk) {
        float dq[kChunk] = {};
        for (int key = 0; key < nk; ++key) {  // dQ = dS K over this tile's keys
          const float ds = dst_s[key * kLdP + me];
#pragma unroll
          for (int cc = 0; cc < kChunk; ++cc) dq[cc] += ds * k_s[key * ld + qd + 4 * (c0 + cc)];
        }
        if (me < M) {
          float* dst = dqkv + (s0 + i0 + me) * QKV + int64_t(h) * HS;
#pragma unroll
          for (int cc = 0; cc < kChunk; ++cc) {
            const int col = qd + 4 * (c0 + cc);
            if (col < HS) atomicAdd(dst + col, dq[cc]);
          }
        }
      }
    }

  if (me < nk) {
    float* dst = dqkv + (s0 + j0 + me) * QKV;
#pragma unroll
    for (int cc = 0; cc < kMaxHS / 4; ++cc) {
      const int col = qd + 4 * cc;
      if (col >= HS) continue;
      dst[int64_t(NH + g) * HS + col] = dk[cc];
      dst[int64_t(NH + NKV + g) * HS + col] = dv[cc];
    }
  }
}

constexpr const char* kOp = "flash_attention_backward";

template <int kHS>
void launch_bwd_mma(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* dsum,
                    const int32_t* cu, int num_seqs, int max_seqlen, int NH, int NKV, float c, float scale,
                    cudaStream_t stream) {
  constexpr size_t smem = bwd_mma_smem<kHS>();
  set_smem(kOp, reinterpret_cast<const void*>(&bwd_mma_kernel<kHS>), smem);
  const dim3 grid((max_seqlen + kTile - 1) / kTile, NKV, num_seqs);
  bwd_mma_kernel<kHS><<<grid, kThreads, smem, stream>>>(dqkv, dout, qkv, lse, dsum, cu, NH, NKV, c, scale);
  SFT_CUDA_LAUNCHED(kOp);
}

template <int kMaxHS>
void launch_bwd_fma(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* dsum,
                    const int32_t* cu, int num_seqs, int max_seqlen, int NH, int NKV, int HS, float c, float scale,
                    bool round, cudaStream_t stream) {
  constexpr size_t smem = bwd_fma_smem<kMaxHS>();
  set_smem(kOp, reinterpret_cast<const void*>(&bwd_fma_kernel<kMaxHS>), smem);
  const dim3 grid((max_seqlen + kTileF - 1) / kTileF, NKV, num_seqs);
  bwd_fma_kernel<kMaxHS>
      <<<grid, kThreads, smem, stream>>>(dqkv, dout, qkv, lse, dsum, cu, NH, NKV, HS, c, scale, round);
  SFT_CUDA_LAUNCHED(kOp);
}

}  // namespace

size_t flash_attention_backward_workspace_bytes(int64_t N, int NH, int, int) {
  return size_t(std::max<int64_t>(N, 0)) * size_t(std::max(NH, 0)) * sizeof(float);  // D (N, NH)
}

void flash_attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                              const float* lse, const int32_t* cu_seqlens, int num_seqs,
                              int max_seqlen, int64_t N, int NH, int NKV, int HS,
                              bool bf16_operands, float* workspace, cudaStream_t stream) {
  attn::check_args(kOp, num_seqs, max_seqlen, N, NH, NKV, HS);
  if (N == 0) return;
  attn::check_ptr(kOp, "dqkv", dqkv, 8);
  // Zero all of dqkv: the q part accumulates atomically, rows outside every sequence stay 0; the
  // k and v parts of sequence rows are overwritten below.
  SFT_CUDA_CHECK(kOp, cudaMemsetAsync(dqkv, 0, size_t(N) * size_t(NH + 2 * NKV) * HS * sizeof(float), stream));
  if (num_seqs == 0 || max_seqlen == 0) return;
  attn::check_ptr(kOp, "dout", dout, 8);
  attn::check_ptr(kOp, "qkv", qkv, 8);
  attn::check_ptr(kOp, "out", out, 4);
  attn::check_ptr(kOp, "lse", lse, 4);
  attn::check_ptr(kOp, "cu_seqlens", cu_seqlens, 4);
  attn::check_ptr(kOp, "workspace", workspace, 4);
  float* dsum = workspace;  // (N, NH)

  const int64_t items = N * NH, per_block = attn::kThreads / 32;
  dsum_kernel<<<unsigned((items + per_block - 1) / per_block), attn::kThreads, 0, stream>>>(dsum, dout, out, N, NH,
                                                                                           HS, bf16_operands);
  SFT_CUDA_LAUNCHED(kOp);

  const float scale = 1.0f / std::sqrt(float(HS)), c = attn::kLog2e * scale;
  if (attn::use_mma(bf16_operands, HS)) {
    if (HS == 64)
      launch_bwd_mma<64>(dqkv, dout, qkv, lse, dsum, cu_seqlens, num_seqs, max_seqlen, NH, NKV, c, scale, stream);
    else
      launch_bwd_mma<128>(dqkv, dout, qkv, lse, dsum, cu_seqlens, num_seqs, max_seqlen, NH, NKV, c, scale, stream);
  } else if (HS <= 64) {
    launch_bwd_fma<64>(dqkv, dout, qkv, lse, dsum, cu_seqlens, num_seqs, max_seqlen, NH, NKV, HS, c, scale,
                       bf16_operands, stream);
  } else if (HS <= 128) {
    launch_bwd_fma<128>(dqkv, dout, qkv, lse, dsum, cu_seqlens, num_seqs, max_seqlen, NH, NKV, HS, c, scale,
                        bf16_operands, stream);
  } else {
    launch_bwd_fma<256>(dqkv, dout, qkv, lse, dsum, cu_seqlens, num_seqs, max_seqlen, NH, NKV, HS, c, scale,
                        bf16_operands, stream);
  }
}

}  // namespace sft::cuda
