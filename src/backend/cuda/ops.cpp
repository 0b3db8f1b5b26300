// CudaBackend's op table (except the GEMMs, in matmul.cpp): shape checks and checks of host-side
// indices (tokens, targets, positions) on the host, then the launchers of kernels.h and
// attention.cuh on the backend's stream. Host int32 inputs go through stage().
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/backend_cuda.h"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"

namespace sft {

// ---- ops ----

void CudaBackend::set_matmul_dtype(DType dt) {
  SFT_CHECK(dt == DType::f32 || dt == DType::bf16, "cuda", "matmul dtype must be f32 or bf16, got {}",
            dtype_name(dt));
  matmul_dtype_ = dt;  // compute capability >= 8.0 was checked at creation: bf16 tensor cores exist
}

void CudaBackend::embedding_forward(Tensor out, const int32_t* tokens, Tensor wte) {
  const int64_t V = wte.dim(0), C = wte.dim(1), N = out.numel() / C;
  for (int64_t n = 0; n < N; ++n)
    SFT_CHECK(tokens[n] >= 0 && tokens[n] < V, "cuda", "embedding_forward: token {} at {} outside vocab {}",
              tokens[n], n, V);
  cuda::embedding_forward(out.f32(), stage(kTokens, tokens, N), wte.f32(), N, C, stream_);
}

void CudaBackend::embedding_backward(Tensor dwte, Tensor dout, const int32_t* tokens) {
  const int64_t V = dwte.dim(0), C = dwte.dim(1), N = dout.numel() / C;
  for (int64_t n = 0; n < N; ++n)
    SFT_CHECK(tokens[n] >= 0 && tokens[n] < V, "cuda", "embedding_backward: token {} at {} outside vocab {}",
              tokens[n], n, V);
  cuda::embedding_backward(dwte.f32(), dout.f32(), stage(kTokens, tokens, N), N, C, stream_);
}

void CudaBackend::rms_norm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, float eps) {
  const int64_t C = w.numel(), N = x.numel() / C;
  SFT_ASSERT(out.numel() == N * C && rstd.numel() >= N);
  cuda::rms_norm_forward(out.f32(), rstd.f32(), x.f32(), w.f32(), N, C, eps, stream_);
}

void CudaBackend::residual_rms_norm_forward(Tensor res, Tensor out, Tensor rstd, Tensor x, Tensor y, Tensor w,
                                            float eps) {
  const int64_t C = w.numel(), N = x.numel() / C;
  SFT_CHECK(res.numel() == N * C && out.numel() == N * C && y.numel() == N * C && rstd.numel() >= N, "cuda",
            "residual_rms_norm_forward: res {}, out {}, y {} elements and rstd {}, expected N*C = {}*{} = {} and "
            "rstd >= {}",
            res.numel(), out.numel(), y.numel(), rstd.numel(), N, C, N * C, N);
  cuda::residual_rms_norm_forward(res.f32(), out.f32(), rstd.f32(), x.f32(), y.f32(), w.f32(), N, C, eps, stream_);
}
void CudaBackend::rms_norm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w, Tensor rstd) {
  const int64_t C = w.numel(), N = x.numel() / C;
  SFT_ASSERT(dx.numel() == N * C && dout.numel() == N * C && dw.numel() == C && rstd.numel() >= N);
  SFT_CHECK(size_t(C) * sizeof(float) + 1024 <= props_.sharedMemPerBlockOptin, "cuda",
            "rms_norm_backward: hidden size {} needs {} KiB of shared memory, the GPU has {} KiB per block", C,
            C * 4 / 1024, props_.sharedMemPerBlockOptin / 1024);
  cuda::rms_norm_backward(dx.f32(), dw.f32(), dout.f32(), x.f32(), w.f32(), rstd.f32(), N, C, stream_);
}

static void check_positions(const int32_t* positions, int64_t N, int64_t P, const char* op) {
  for (int64_t n = 0; n < N; ++n)
    SFT_CHECK(positions[n] >= 0 && positions[n] < P, "cuda", "{}: position {} at {} outside the table of {}", op,
              positions[n], n, P);
}

void CudaBackend::rope_forward(Tensor qkv, const int32_t* positions, Tensor cos, Tensor sin, int NH, int NKV,
                               int HS) {
  const int64_t N = qkv.numel() / (int64_t(NH + 2 * NKV) * HS);
  check_positions(positions, N, cos.dim(0), "rope_forward");
  cuda::rope_forward(qkv.f32(), stage(kPositions, positions, N), cos.f32(), sin.f32(), N, NH, NKV, HS, stream_);
}

void CudaBackend::rope_backward(Tensor dqkv, const int32_t* positions, Tensor cos, Tensor sin, int NH, int NKV,
                                int HS) {
  const int64_t N = dqkv.numel() / (int64_t(NH + 2 * NKV) * HS);
  check_positions(positions, N, cos.dim(0), "rope_backward");
  cuda::rope_backward(dqkv.f32(), stage(kPositions, positions, N), cos.f32(), sin.f32(), N, NH, NKV, HS, stream_);
}

int CudaBackend::max_seqlen(const SeqLayout& seqs) const {
  if (seqs.max_seqlen > 0) return seqs.max_seqlen;
  int m = 0;
  for (int s = 0; s < seqs.num_seqs; ++s) m = std::max(m, seqs.cu_seqlens[s + 1] - seqs.cu_seqlens[s]);
  return m;
}

float* CudaBackend::attention_workspace(size_t bytes) {
  if (bytes > attn_workspace_bytes_) {
    free_device(attn_workspace_);
    attn_workspace_ = nullptr;
    attn_workspace_bytes_ = 0;
    attn_workspace_ = static_cast<float*>(alloc_scratch(bytes, "attention_backward workspace"));
    attn_workspace_bytes_ = bytes;
  }
  return attn_workspace_;
}

void CudaBackend::attention_forward(Tensor out, Tensor lse, Tensor qkv, const SeqLayout& seqs, int NH, int NKV,
                                    int HS) {
  const int64_t N = seqs.cu_seqlens[seqs.num_seqs];
  SFT_ASSERT(qkv.numel() == N * (NH + 2 * NKV) * HS && out.numel() == N * NH * HS && lse.numel() >= N * NH);
  const int32_t* cu = stage(kCuSeqlens, seqs.cu_seqlens, seqs.num_seqs + 1);
  cuda::flash_attention_forward(out.f32(), lse.f32(), qkv.f32(), cu, seqs.num_seqs, max_seqlen(seqs), N, NH, NKV,
                                HS, matmul_dtype_ == DType::bf16, stream_);
}

void CudaBackend::attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                     const SeqLayout& seqs, int NH, int NKV, int HS) {
  const int64_t N = seqs.cu_seqlens[seqs.num_seqs];
  SFT_ASSERT(dqkv.numel() == N * (NH + 2 * NKV) * HS && dout.numel() == N * NH * HS && qkv.numel() == dqkv.numel());
  const int32_t* cu = stage(kCuSeqlens, seqs.cu_seqlens, seqs.num_seqs + 1);
  float* ws = attention_workspace(cuda::flash_attention_backward_workspace_bytes(N, NH, NKV, HS));
  cuda::flash_attention_backward(dqkv.f32(), dout.f32(), qkv.f32(), out.f32(), lse.f32(), cu, seqs.num_seqs,
                                 max_seqlen(seqs), N, NH, NKV, HS, matmul_dtype_ == DType::bf16, ws, stream_);
}

void CudaBackend::attention_forward_cached(Tensor out, Tensor qkv_cache, int64_t start, int64_t n, int NH, int NKV,
                                           int HS) {
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
  SFT_ASSERT(qkv_cache.dim(-1) == QKV && start + n <= qkv_cache.dim(0) && out.numel() == n * NH * HS);
  SFT_CHECK(HS <= 256, "cuda", "attention_forward_cached: head_dim {} > 256 is not supported", HS);
  cuda::attention_forward_cached(out.f32(), qkv_cache.f32(), start, n, NH, NKV, HS, stream_);
}

void CudaBackend::swiglu_forward(Tensor out, Tensor gu) {
  const int64_t FF = gu.dim(-1) / 2, N = gu.numel() / (2 * FF);
  SFT_ASSERT(out.numel() == N * FF);
  cuda::swiglu_forward(out.f32(), gu.f32(), N, FF, stream_);
}

void CudaBackend::swiglu_backward(Tensor dgu, Tensor dout, Tensor gu) {
  const int64_t FF = gu.dim(-1) / 2, N = gu.numel() / (2 * FF);
  SFT_ASSERT(dout.numel() == N * FF && dgu.numel() == N * 2 * FF);
  cuda::swiglu_backward(dgu.f32(), dout.f32(), gu.f32(), N, FF, stream_);
}

static void check_targets(const int32_t* targets, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] != -100 && (targets[n] < 0 || targets[n] >= V))
      fail("cross_entropy", "target {} at token {} outside vocab {}", targets[n], n, V);
}

void CudaBackend::cross_entropy_forward(Tensor losses, Tensor logits, const int32_t* targets) {
  const int64_t V = logits.dim(-1), N = logits.numel() / V;
  check_targets(targets, N, V);
  cuda::cross_entropy_forward(losses.f32(), logits.f32(), stage(kTargets, targets, N), N, V, stream_);
}

void CudaBackend::cross_entropy_forward_backward(Tensor losses, Tensor logits, const int32_t* targets,
                                                 float dloss_scale) {
  const int64_t V = logits.dim(-1), N = logits.numel() / V;
  check_targets(targets, N, V);
  cuda::cross_entropy_forward_backward(losses.f32(), logits.f32(), stage(kTargets, targets, N), N, V, dloss_scale,
                                       stream_);
}

void CudaBackend::cross_entropy_forward_backward_bf16(Tensor, Tensor, const int32_t*, float, Tensor) {
  fail("cuda", "cross_entropy_forward_backward_bf16: this backend keeps activations in fp32 (bf16_activations() is "
               "false), so the model never asks for bf16 dlogits here");
}

void CudaBackend::adamw_step(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) {
  SFT_ASSERT(param.numel() == grad.numel() && m.numel() == param.numel() && v.numel() == param.numel());
  // The scalars exactly as the CPU kernel (and torch) forms them: double, then rounded to fp32.
  const double lr = p.lr, b1 = p.beta1, b2 = p.beta2;
  const double bias_c1 = 1.0 - std::pow(b1, double(p.step)), bias_c2 = 1.0 - std::pow(b2, double(p.step));
  const cuda::AdamWScalars a{float(1.0 - lr * double(p.weight_decay)),
                             float(b1),
                             float(b2),
                             float(1.0 - b1),
                             float(1.0 - b2),
                             float(-(lr / bias_c1)),
                             float(std::sqrt(bias_c2)),
                             p.eps,
                             p.grad_scale};
  // Weights with a bf16 GEMM copy get it rewritten in the same pass over memory; the rest of the
  // range (norms, biases, weights never used in bf16) gets the plain update.
  float *P = param.f32(), *G = grad.f32(), *M = m.f32(), *V = v.f32();
  const int64_t n = param.numel();
  int64_t done = 0;
  for (const WeightCopy& c : weight_copies_in(P, n)) {
    cuda::adamw_step(P + done, G + done, M + done, V + done, c.offset - done, a, stream_);
    cuda::adamw_step_bf16(P + c.offset, c.bf16, G + c.offset, M + c.offset, V + c.offset, c.n, a, stream_);
    done = c.offset + c.n;
  }
  cuda::adamw_step(P + done, G + done, M + done, V + done, n - done, a, stream_);
}

double CudaBackend::sum_squares(Tensor x) {
  double result = 0.0;
  cuda::sum_squares(reduce_scratch_ + cuda::kReduceBlocks, reduce_scratch_, x.f32(), x.numel(), stream_);
  SFT_CUDA_CHECK("sum_squares", cudaMemcpyAsync(&result, reduce_scratch_ + cuda::kReduceBlocks, sizeof(double),
                                                cudaMemcpyDeviceToHost, stream_));
  SFT_CUDA_CHECK("sum_squares", cudaStreamSynchronize(stream_));
  return result;
}

void CudaBackend::scale(Tensor x, float s) {
  weights_written(x.data, x.nbytes());
  cuda::scale(x.f32(), x.numel(), s, stream_);
}

}  // namespace sft
