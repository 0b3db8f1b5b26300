// CpuBackend: memory and the op table, forwarding to the kernels of kernels.h after checking
// shapes. GEMMs live in matmul.cpp.
#include "backend/cpu/backend_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <omp.h>
#include <sys/mman.h>

#include "backend/cpu/kernels.h"
#include "core/aligned_vector.h"

namespace sft {

namespace {

// out16 (N, W) = a row-wise op's fp32 rows rounded to bf16 (f32_to_bf16): row_op(dst, r0, n)
// writes rows [r0, r0 + n) in fp32 to dst, here a per-thread scratch of ~64 KB that stays in L2,
// so only the bf16 rows reach memory. Bit-identical to running the op into an fp32 buffer and
// rounding that. The op's own parallel loop runs inside one thread here (nested regions are off).
template <class RowOp>
void rows_to_bf16(uint16_t* out16, int64_t N, int64_t W, RowOp&& row_op) {
  const int64_t block = std::max<int64_t>(1, (int64_t(64) << 10) / (W * 4));
#pragma omp parallel if (N * W > (1 << 14))
  {
    thread_local AlignedVector<float> scratch;
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t per = (N + nt - 1) / nt, lo = std::min(N, t * per), hi = std::min(N, lo + per);
    if (scratch.size() < size_t(block * W)) scratch.resize(size_t(block * W));
    for (int64_t r0 = lo; r0 < hi; r0 += block) {
      const int64_t n = std::min(block, hi - r0);
      row_op(scratch.data(), r0, n);
      convert_f32_to_bf16(scratch.data(), out16 + r0 * W, size_t(n * W));
    }
  }
}

}  // namespace

void* CpuBackend::alloc(size_t bytes) {
  if (memory_of_) return memory_of_->alloc_host(bytes);
  // Buffers of 2 MB and more start on a 2 MB boundary and ask for transparent huge pages
  // (Linux's default THP mode is madvise): GEMMs and the streaming passes over weights,
  // gradients and activations then miss the TLB 512x less often.
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = bytes >= kHuge ? kHuge : 64;
  size_t rounded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded ? rounded : 64);
  if (!p) fail("cpu", "out of memory allocating {} MB", bytes >> 20);
  if (align == kHuge) madvise(p, rounded, MADV_HUGEPAGE);  // advisory: ignored where THP is off
  std::memset(p, 0, rounded);
  return p;
}
void CpuBackend::dealloc(void* ptr) {
  weights_written(ptr, 0, true);
  if (memory_of_) memory_of_->free_host(ptr);
  else std::free(ptr);
}
void CpuBackend::copy(void* dst, const void* src, size_t bytes) {
  weights_written(dst, bytes);
  std::memcpy(dst, src, bytes);
}
void CpuBackend::fill_zero(Tensor t) {
  weights_written(t.data, t.nbytes());
  // One memset runs at a single core's store bandwidth (~11 GB/s here); the gradients of a
  // 134M-parameter model are zeroed every step, so split large buffers over the threads.
  const size_t bytes = t.nbytes(), block = size_t(1) << 20;
  const int64_t blocks = int64_t((bytes + block - 1) / block);
  char* p = static_cast<char*>(t.data);
#pragma omp parallel for schedule(static) if (blocks > 4)
  for (int64_t b = 0; b < blocks; ++b) std::memset(p + size_t(b) * block, 0, std::min(block, bytes - size_t(b) * block));
}

void CpuBackend::embedding_forward(Tensor out, const int32_t* tokens, Tensor wte) {
  cpu::embedding_forward(out.f32(), tokens, wte.f32(), out.numel() / wte.dim(1), wte.dim(1));
}
void CpuBackend::embedding_backward(Tensor dwte, Tensor dout, const int32_t* tokens) {
  cpu::embedding_backward(dwte.f32(), dout.f32(), tokens, dout.numel() / dwte.dim(1), dwte.dim(1));
}

// out may be bf16 (bf16_activations(): the rounding of the fp32 result, made in cache)
void CpuBackend::rms_norm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, float eps) {
  const int64_t C = w.numel(), N = x.numel() / C;
  SFT_ASSERT(out.numel() == N * C && rstd.numel() >= N);
  if (out.dtype == DType::bf16) {
    const float *xs = x.f32(), *ws = w.f32();
    float* rs = rstd.f32();
    return rows_to_bf16(out.bf16(), N, C, [&](float* o, int64_t r0, int64_t n) {
      cpu::rms_norm_forward(o, rs + r0, xs + r0 * C, ws, n, C, eps);
    });
  }
  cpu::rms_norm_forward(out.f32(), rstd.f32(), x.f32(), w.f32(), N, C, eps);
}
void CpuBackend::residual_rms_norm_forward(Tensor res, Tensor out, Tensor rstd, Tensor x, Tensor y,
                                           Tensor w, float eps) {
  const int64_t C = w.numel(), N = x.numel() / C;
  SFT_CHECK(res.numel() == N * C && out.numel() == N * C && y.numel() == N * C && rstd.numel() >= N,
            "cpu", "residual_rms_norm_forward: res {}, out {}, y {} elements and rstd {}, expected "
            "N*C = {}*{} = {} and rstd >= {}", res.numel(), out.numel(), y.numel(), rstd.numel(), N, C,
            N * C, N);
  if (out.dtype == DType::bf16) {
    float *rr = res.f32(), *rs = rstd.f32();
    const float *xs = x.f32(), *ys = y.f32(), *ws = w.f32();
    return rows_to_bf16(out.bf16(), N, C, [&](float* o, int64_t r0, int64_t n) {
      cpu::residual_rms_norm_forward(rr + r0 * C, o, rs + r0, xs + r0 * C, ys + r0 * C, ws, n, C, eps);
    });
  }
  cpu::residual_rms_norm_forward(res.f32(), out.f32(), rstd.f32(), x.f32(), y.f32(), w.f32(), N, C,
                                 eps);
}
void CpuBackend::rms_norm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w,
                                   Tensor rstd) {
  const int64_t C = w.numel(), N = x.numel() / C;
  cpu::rms_norm_backward(dx.f32(), dw.f32(), dout.f32(), x.f32(), w.f32(), rstd.f32(), N, C);
}

void CpuBackend::rope_forward(Tensor qkv, const int32_t* positions, Tensor cos, Tensor sin, int NH,
                              int NKV, int HS) {
  const int64_t N = qkv.numel() / (int64_t(NH + 2 * NKV) * HS);
  cpu::rope_forward(qkv.f32(), positions, cos.f32(), sin.f32(), N, NH, NKV, HS);
}
void CpuBackend::rope_backward(Tensor dqkv, const int32_t* positions, Tensor cos, Tensor sin,
                               int NH, int NKV, int HS) {
  const int64_t N = dqkv.numel() / (int64_t(NH + 2 * NKV) * HS);
  cpu::rope_backward(dqkv.f32(), positions, cos.f32(), sin.f32(), N, NH, NKV, HS);
}

void CpuBackend::attention_forward(Tensor out, Tensor lse, Tensor qkv, const SeqLayout& seqs,
                                   int NH, int NKV, int HS) {
  // bf16 runs take the AMX kernel where the CPU has tiles (same inputs, bf16 tile products)
  if (matmul_dtype_ == DType::bf16 && cpu::attention_amx_usable(HS))
    cpu::attention_forward_amx(out.f32(), lse.f32(), qkv.f32(), seqs, NH, NKV, HS);
  else
    cpu::attention_forward(out.f32(), lse.f32(), qkv.f32(), seqs, NH, NKV, HS);
}
void CpuBackend::attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                    const SeqLayout& seqs, int NH, int NKV, int HS) {
  if (matmul_dtype_ == DType::bf16 && cpu::attention_amx_usable(HS))
    cpu::attention_backward_amx(dqkv.f32(), dout.f32(), qkv.f32(), out.f32(), lse.f32(), seqs, NH,
                                NKV, HS);
  else
    cpu::attention_backward(dqkv.f32(), dout.f32(), qkv.f32(), out.f32(), lse.f32(), seqs, NH, NKV,
                            HS);
}

// out (forward) and dgu (backward) may be bf16, as rms_norm_forward's out
void CpuBackend::swiglu_forward(Tensor out, Tensor gu) {
  const int64_t FF = gu.dim(-1) / 2, N = gu.numel() / (2 * FF);
  if (out.dtype == DType::bf16) {
    const float* g = gu.f32();
    return rows_to_bf16(out.bf16(), N, FF, [&](float* o, int64_t r0, int64_t n) {
      cpu::swiglu_forward(o, g + r0 * 2 * FF, n, FF);
    });
  }
  cpu::swiglu_forward(out.f32(), gu.f32(), N, FF);
}
void CpuBackend::swiglu_backward(Tensor dgu, Tensor dout, Tensor gu) {
  const int64_t FF = gu.dim(-1) / 2, N = gu.numel() / (2 * FF);
  if (dgu.dtype == DType::bf16) {
    const float *d = dout.f32(), *g = gu.f32();
    return rows_to_bf16(dgu.bf16(), N, 2 * FF, [&](float* o, int64_t r0, int64_t n) {
      cpu::swiglu_backward(o, d + r0 * FF, g + r0 * 2 * FF, n, FF);
    });
  }
  cpu::swiglu_backward(dgu.f32(), dout.f32(), gu.f32(), N, FF);
}

void CpuBackend::cross_entropy_forward(Tensor losses, Tensor logits, const int32_t* targets) {
  const int64_t V = logits.dim(-1), N = logits.numel() / V;
  cpu::cross_entropy_forward(losses.f32(), logits.f32(), targets, N, V);
}
void CpuBackend::cross_entropy_forward_backward(Tensor losses, Tensor logits,
                                                const int32_t* targets, float dloss_scale) {
  const int64_t V = logits.dim(-1), N = logits.numel() / V;
  cpu::cross_entropy_forward_backward(losses.f32(), logits.f32(), targets, N, V, dloss_scale);
}
void CpuBackend::cross_entropy_forward_backward_bf16(Tensor losses, Tensor logits, const int32_t* targets,
                                                     float dloss_scale, Tensor dlogits16) {
  const int64_t V = logits.dim(-1), N = logits.numel() / V;
  SFT_CHECK(dlogits16.dtype == DType::bf16 && dlogits16.numel() == N * V, "cpu",
            "cross_entropy_forward_backward_bf16: dlogits16 is {} with {} elements, expected bf16 with N*V = {}",
            dtype_name(dlogits16.dtype), dlogits16.numel(), N * V);
  cpu::cross_entropy_forward_backward_bf16(losses.f32(), logits.f32(), targets, N, V, dloss_scale, dlogits16.bf16());
}

void CpuBackend::adamw_step(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) {
  SFT_ASSERT(param.numel() == grad.numel() && m.numel() == param.numel() &&
             v.numel() == param.numel());
  weights_written(param.data, param.nbytes());
  cpu::adamw_step(param.f32(), grad.f32(), m.f32(), v.f32(), param.numel(), p);
}

double CpuBackend::sum_squares(Tensor x) { return cpu::sum_squares(x.f32(), x.numel()); }

void CpuBackend::scale(Tensor x, float s) {
  weights_written(x.data, x.nbytes());
  float* p = x.f32();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] *= s;
}

}  // namespace sft
