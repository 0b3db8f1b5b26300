// FlashAttention forward on the GPU (FlashAttention-2, Alg. 1): one block per (query tile,
// query head, sequence) loops over the key tiles up to the diagonal with an online softmax
// (running max m and sum l in log2 units, O rescaled by 2^(m_old - m_new)); writes out and lse.
// Two kernels: bf16 tensor cores (mma.sync, HS 64/128, 64×64 tiles, S and O in registers) and fp32
// FMAs (any HS multiple of 8 <= 256, 32×32 tiles).
#include <algorithm>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/attention_tiles.cuh"

namespace sft::cuda {

namespace {

using namespace attn;

// ---- tensor cores: warp w owns query rows 16w..16w+15 of the tile; per lane rows gid, gid+8 ----
template <int kHS>
constexpr size_t fwd_mma_smem() {  // q (64, HS) | k (64, HS) | v transposed (HS, 64), bf16
  return (size_t(2) * kTile * kLdOf<kHS> + size_t(kHS) * kLdT) * sizeof(uint16_t);
}

template <int kHS>
__global__ void __launch_bounds__(kThreads)
    fwd_mma_kernel(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ qkv,
                   const int32_t* __restrict__ cu_seqlens, int NH, int NKV, float c) {
  constexpr int kLd = kLdOf<kHS>;
  extern __shared__ __align__(16) unsigned char smem[];
  uint16_t* q_s = reinterpret_cast<uint16_t*>(smem);  // (64, HS) row stride kLd
  uint16_t* k_s = q_s + kTile * kLd;                   // (64, HS) row stride kLd
  uint16_t* vt_s = k_s + kTile * kLd;                  // (HS, 64) row stride kLdT: vt_s[d][j] = v[j][d]

  const int64_t s0 = cu_seqlens[blockIdx.z];
  const int T = int(cu_seqlens[blockIdx.z + 1] - s0);
  const int i0 = int(gridDim.x - 1 - blockIdx.x) * kTile;  // the longest (diagonal-most) tiles start first
  if (i0 >= T) return;                                     // uniform over the block
  const int M = min(kTile, T - i0), h = blockIdx.y, g = h / (NH / NKV);
  const int64_t QKV = int64_t(NH + 2 * NKV) * kHS;
  const Lane ln;
  const int r0 = 16 * ln.warp;  // first local query row of this warp

  load_tile_bf16<kHS>(qkv + (s0 + i0) * QKV + int64_t(h) * kHS, QKV, M, q_s, nullptr);

  float o[kHS / 8][4] = {};            // O rows (r0+gid, r0+gid+8), columns 8db + 2tig + {0,1}
  float m[2] = {-INFINITY, -INFINITY};  // running max of rows gid, gid+8 (log2 units, quad-uniform)
  float l[2] = {0.0f, 0.0f};            // running sum of this lane's columns (quad-summed at the end)

  for (int j0 = 0; j0 < i0 + M; j0 += kTile) {  // key tiles holding a key <= the last query row
    const int nk = min(kTile, T - j0);
    __syncthreads();  // the previous tile's k_s / vt_s reads are done
    const float* kv = qkv + (s0 + j0) * QKV;
    load_tile_bf16<kHS>(kv + int64_t(NH + g) * kHS, QKV, nk, k_s, nullptr);
    load_tile_bf16<kHS>(kv + int64_t(NH + NKV + g) * kHS, QKV, nk, nullptr, vt_s);
    __syncthreads();  // tiles (and q_s on the first pass) visible to all warps

    // S (16 rows × 64 keys per warp) = Q K^T: k runs over HS, the 8 n-blocks over keys.
    float s[8][4] = {};
#pragma unroll
    for (int kk = 0; kk < kHS / 16; ++kk) {
      uint32_t a[4];
      a_from_smem(a, q_s, kLd, r0, 16 * kk, ln);
#pragma unroll
      for (int nb = 0; nb < 8; ++nb) {
        uint32_t b[2];
        b_from_smem(b, k_s, kLd, 8 * nb, 16 * kk, ln);
        mma_bf16(s[nb], a, b);
      }
    }
    // Scale to log2 units and mask: key j0+key is visible from query i0+row iff key < nk and
    // j0 + key <= i0 + row. Row max over the tile; a row with nothing visible yet keeps -inf.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = 8 * nb + 2 * ln.tig + (e & 1), row = r0 + ln.gid + 8 * (e >> 1);
        const bool ok = key < nk && j0 + key <= i0 + row;
        s[nb][e] = ok ? s[nb][e] * c : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[nb][e]);
      }
    float alpha[2], m_use[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], quad_max(mx[r]));
      m_use[r] = m_new == -INFINITY ? 0.0f : m_new;  // all masked so far: exp2(-inf - 0) = 0, no NaN
      alpha[r] = exp2f(m[r] - m_use[r]);             // 0 when m[r] = -inf
      m[r] = m_new;
    }
    float sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int nb = 0; nb < 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nb][e] = exp2f(s[nb][e] - m_use[e >> 1]);
        sum[e >> 1] += s[nb][e];
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + sum[r];
#pragma unroll
    for (int db = 0; db < kHS / 8; ++db)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[db][e] *= alpha[e >> 1];

    // O += P V: P (16 × 64 keys) straight from the S accumulators; V^T rows give the b-fragments.
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      uint32_t a[4];
      a_from_acc(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int db = 0; db < kHS / 8; ++db) {
        uint32_t b[2];
        b_from_smem(b, vt_s, kLdT, 8 * db, 16 * kk, ln);
        mma_bf16(o[db], a, b);
      }
    }
  }

  const int64_t OC = int64_t(NH) * kHS;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l_row = quad_sum(l[r]);  // >= 1 for a real row: its own key scores 2^0
    const int row = r0 + ln.gid + 8 * r;
    if (row >= M) continue;
    const float inv = 1.0f / l_row;
    float* dst = out + (s0 + i0 + row) * OC + int64_t(h) * kHS + 2 * ln.tig;
#pragma unroll
    for (int db = 0; db < kHS / 8; ++db)
      *reinterpret_cast<float2*>(dst + 8 * db) = make_float2(o[db][2 * r] * inv, o[db][2 * r + 1] * inv);
    if (ln.tig == 0) lse[(s0 + i0 + row) * NH + h] = (m[r] + log2f(l_row)) * kLn2;
  }
}

// ---- FMA path: thread t owns query row t/4 of the 32-row tile; its quad splits the keys
// (key = qd + 4jj) and the output columns (col = qd + 4cc). ----
template <int kMaxHS>
size_t fwd_fma_smem(int HS) {  // q, k (32, HS+1) | v (32, kMaxHS) | p (32, 33), fp32
  return (size_t(2) * kTileF * (HS + 1) + size_t(kTileF) * kMaxHS + size_t(kTileF) * kLdP) * sizeof(float);
}

template <int kMaxHS>
__global__ void __launch_bounds__(kThreads)
    fwd_fma_kernel(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ qkv,
                   const int32_t* __restrict__ cu_seqlens, int NH, int NKV, int HS, float c, bool round) {
  extern __shared__ __align__(16) float smem_f[];
  const int ldq = HS + 1;  // odd stride: the quad's 4 key rows (and 8 query rows) hit distinct banks
  float* q_s = smem_f;                  // (32, HS)
  float* k_s = q_s + kTileF * ldq;      // (32, HS)
  float* v_s = k_s + kTileF * ldq;      // (32, kMaxHS), columns >= HS zero
  float* p_s = v_s + kTileF * kMaxHS;   // (32, 32) probabilities of the current tile

  const int64_t s0 = cu_seqlens[blockIdx.z];
  const int T = int(cu_seqlens[blockIdx.z + 1] - s0);
  const int i0 = int(gridDim.x - 1 - blockIdx.x) * kTileF;
  if (i0 >= T) return;
  const int M = min(kTileF, T - i0), h = blockIdx.y, g = h / (NH / NKV);
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
  const int row = threadIdx.x / 4, qd = threadIdx.x % 4;

  load_tile_f32(q_s, ldq, qkv + (s0 + i0) * QKV + int64_t(h) * HS, QKV, M, HS, HS, round);
  float o[kMaxHS / 4] = {};
  float m = -INFINITY, l = 0.0f;  // row max (log2 units, quad-uniform), this lane's partial sum

  for (int j0 = 0; j0 < i0 + M; j0 += kTileF) {
    const int nk = min(kTileF, T - j0);
    __syncthreads();  // previous tile's k_s, v_s, p_s reads are done
    const float* kv = qkv + (s0 + j0) * QKV;
    load_tile_f32(k_s, ldq, kv + int64_t(NH + g) * HS, QKV, nk, HS, HS, round);
    load_tile_f32(v_s, kMaxHS, kv + int64_t(NH + NKV + g) * HS, QKV, nk, HS, kMaxHS, round);
    __syncthreads();

    float s[8] = {};
    for (int d = 0; d < HS; ++d) {
      const float qv = q_s[row * ldq + d];
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) s[jj] += qv * k_s[(qd + 4 * jj) * ldq + d];
    }
    float mx = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const int key = qd + 4 * jj;
      s[jj] = key < nk && j0 + key <= i0 + row ? s[jj] * c : -INFINITY;
      mx = fmaxf(mx, s[jj]);
    }
    const float m_new = fmaxf(m, quad_max(mx)), m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = exp2f(m - m_use);
    m = m_new;
    float sum = 0.0f;
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const float p = exp2f(s[jj] - m_use);
      p_s[row * kLdP + qd + 4 * jj] = p;
      sum += p;
    }
    l = l * alpha + sum;
#pragma unroll
    for (int cc = 0; cc < kMaxHS / 4; ++cc) o[cc] *= alpha;
    __syncthreads();  // p_s row complete (written by the row's quad)

    for (int j = 0; j < nk; ++j) {  // keys >= nk have p = 0
      const float p = p_s[row * kLdP + j];
#pragma unroll
      for (int cc = 0; cc < kMaxHS / 4; ++cc) o[cc] += p * v_s[j * kMaxHS + qd + 4 * cc];
    }
  }

  const float l_row = quad_sum(l);
  if (row < M) {
    const float inv = 1.0f / l_row;
    float* dst = out + (s0 + i0 + row) * int64_t(NH) * HS + int64_t(h) * HS;
#pragma unroll
    for (int cc = 0; cc < kMaxHS / 4; ++cc)
      if (qd + 4 * cc < HS) dst[qd + 4 * cc] = o[cc] * inv;
    if (qd == 0) lse[(s0 + i0 + row) * NH + h] = (m + log2f(l_row)) * kLn2;
  }
}

template <int kMaxHS>
void launch_fwd_fma(float* out, float* lse, const float* qkv, const int32_t* cu, int num_seqs, int max_seqlen,
                    int NH, int NKV, int HS, float c, bool round, cudaStream_t stream) {
  constexpr const char* op = "flash_attention_forward";
  const size_t smem = fwd_fma_smem<kMaxHS>(HS);
  set_smem(op, reinterpret_cast<const void*>(&fwd_fma_kernel<kMaxHS>), smem);
  const dim3 grid((max_seqlen + kTileF - 1) / kTileF, NH, num_seqs);
  fwd_fma_kernel<kMaxHS><<<grid, kThreads, smem, stream>>>(out, lse, qkv, cu, NH, NKV, HS, c, round);
  SFT_CUDA_LAUNCHED(op);
}

template <int kHS>
void launch_fwd_mma(float* out, float* lse, const float* qkv, const int32_t* cu, int num_seqs, int max_seqlen,
                    int NH, int NKV, float c, cudaStream_t stream) {
  constexpr const char* op = "flash_attention_forward";
  constexpr size_t smem = fwd_mma_smem<kHS>();
  set_smem(op, reinterpret_cast<const void*>(&fwd_mma_kernel<kHS>), smem);
  const dim3 grid((max_seqlen + kTile - 1) / kTile, NH, num_seqs);
  fwd_mma_kernel<kHS><<<grid, kThreads, smem, stream>>>(out, lse, qkv, cu, NH, NKV, c);
  SFT_CUDA_LAUNCHED(op);
}

}  // namespace

void flash_attention_forward(float* out, float* lse, const float* qkv, const int32_t* cu_seqlens,
                             int num_seqs, int max_seqlen, int64_t N, int NH, int NKV, int HS,
                             bool bf16_operands, cudaStream_t stream) {
  constexpr const char* op = "flash_attention_forward";
  attn::check_args(op, num_seqs, max_seqlen, N, NH, NKV, HS);
  if (N == 0 || num_seqs == 0 || max_seqlen == 0) return;
  attn::check_ptr(op, "out", out, 8);
  attn::check_ptr(op, "lse", lse, 4);
  attn::check_ptr(op, "qkv", qkv, 8);
  attn::check_ptr(op, "cu_seqlens", cu_seqlens, 4);
  const float c = attn::kLog2e / std::sqrt(float(HS));  // scale 1/sqrt(HS), in log2 units
  if (attn::use_mma(bf16_operands, HS)) {
    if (HS == 64) launch_fwd_mma<64>(out, lse, qkv, cu_seqlens, num_seqs, max_seqlen, NH, NKV, c, stream);
    else launch_fwd_mma<128>(out, lse, qkv, cu_seqlens, num_seqs, max_seqlen, NH, NKV, c, stream);
  } else if (HS <= 64) {
    launch_fwd_fma<64>(out, lse, qkv, cu_seqlens, num_seqs, max_seqlen, NH, NKV, HS, c, bf16_operands, stream);
  } else if (HS <= 128) {
    launch_fwd_fma<128>(out, lse, qkv, cu_seqlens, num_seqs, max_seqlen, NH, NKV, HS, c, bf16_operands, stream);
  } else {
    launch_fwd_fma<256>(out, lse, qkv, cu_seqlens, num_seqs, max_seqlen, NH, NKV, HS, c, bf16_operands, stream);
  }
}

}  // namespace sft::cuda
