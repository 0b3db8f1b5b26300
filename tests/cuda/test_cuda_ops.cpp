// Every op of the CUDA backend against the CPU backend on the same random inputs (fresh each run,
// seed printed), forward and backward, with the GPU outputs poisoned with NaN before each launch
// and accumulating outputs (+=) started from the same random values on both sides. Tolerances
// (normalised error max|gpu - cpu| / max|cpu|) are in kTol with the reason for each. Skipped,
// saying why, where no usable GPU exists (as on the build machines).
#include <algorithm>
#include <array>
#include <cmath>

#include "cuda_test_util.h"

namespace sft {
namespace {

using cuda_test::CudaTest;
using cuda_test::Mirror;

struct Tol {
  const char* op;
  double max_err;
};
constexpr Tol kTol[] = {
    // Copies and single fp32 expressions: the GPU may contract a*b+c into one FMA (one rounding
    // instead of two) and its expf/logf differ from the CPU's by an ulp or two: ~1e-7; 1e-5 still
    // fails on any wrong index or term (errors of order 1).
    {"embedding", 0.0},           // pure copies
    {"embedding_backward", 1e-6}, // atomicAdd order of repeated tokens vs the CPU's row order
    {"rms_norm", 1e-5},           // fp32 sums over C in another order
    {"rms_norm_backward", 2e-5},  // and dw summed over N rows in blocks + atomics
    {"residual_add", 0.0},        // res = x + y: one fp32 add on both sides, bit-identical
    {"rope", 1e-5},
    {"swiglu", 1e-5},
    {"cross_entropy", 1e-5},      // fp32 Σexp over V (the CPU sums in double)
    {"adamw", 1e-7},              // written with _rn intrinsics in the CPU's order: bit-identical expected
    {"sum_squares", 1e-12},       // double sums in another order
    {"scale", 0.0},
    {"attention_cached", 1e-5},
    // FlashAttention through the backend (its own test checks it in depth against the reference):
    {"attention_fp32", 1e-4},     // fp32 tiles, online softmax vs the CPU's tiles
    {"attention_bf16", 3e-2},     // q, k, v, P rounded to bf16 on the GPU only (2^-9 each)
};

double tol(const std::string& op) {
  for (const Tol& t : kTol)
    if (op == t.op) return t.max_err;
  ADD_FAILURE() << "no tolerance for " << op;
  return 0;
}

#define EXPECT_CLOSE(m, op) EXPECT_LE(err(m), tol(op)) << #m << " (" << op << ", seed " << seed_ << ")"

class CudaOps : public CudaTest {};

TEST_F(CudaOps, Embedding) {
  const int64_t V = 50, C = 72, N = 300;  // N > V: many repeated tokens
  const std::vector<int32_t> tok = randint(N, 0, V - 1);
  Mirror wte = mirror(randn(V * C), {V, C}), out = output({N, C});
  cpu_->embedding_forward(out.cpu, tok.data(), wte.cpu);
  gpu_->embedding_forward(out.gpu, tok.data(), wte.gpu);
  EXPECT_CLOSE(out, "embedding");
  Mirror dout = mirror(randn(N * C), {N, C}), dwte = mirror(randn(V * C), {V, C});
  cpu_->embedding_backward(dwte.cpu, dout.cpu, tok.data());
  gpu_->embedding_backward(dwte.gpu, dout.gpu, tok.data());
  EXPECT_CLOSE(dwte, "embedding_backward");
  std::vector<int32_t> bad = tok;
  bad[7] = int32_t(V);
  EXPECT_THROW(gpu_->embedding_forward(out.gpu, bad.data(), wte.gpu), Error);
}

TEST_F(CudaOps, RmsNorm) {
  for (int64_t C : {64, 288, 2048, 5001}) {
    const int64_t N = 67;
    Mirror x = mirror(randn(N * C), {N, C}), w = mirror(randn(C, 0.5f), {C});
    Mirror out = output({N, C}), rstd = output({N});
    cpu_->rms_norm_forward(out.cpu, rstd.cpu, x.cpu, w.cpu, 1e-5f);
    gpu_->rms_norm_forward(out.gpu, rstd.gpu, x.gpu, w.gpu, 1e-5f);
    EXPECT_CLOSE(out, "rms_norm");
    EXPECT_CLOSE(rstd, "rms_norm");
    Mirror dout = mirror(randn(N * C), {N, C}), dx = mirror(randn(N * C), {N, C}), dw = mirror(randn(C), {C});
    cpu_->rms_norm_backward(dx.cpu, dw.cpu, dout.cpu, x.cpu, w.cpu, rstd.cpu);
    gpu_->rms_norm_backward(dx.gpu, dw.gpu, dout.gpu, x.gpu, w.gpu, rstd.gpu);
    EXPECT_CLOSE(dx, "rms_norm_backward");
    EXPECT_CLOSE(dw, "rms_norm_backward");
  }
}

// RMSNorm fused with the residual add: against the CPU backend (res exact, out and rstd within the
// rms_norm tolerance) and against the GPU's own add-then-rms_norm_forward (bit-identical), also
// in place (res is x).
TEST_F(CudaOps, ResidualRmsNorm) {
  for (int64_t C : {64, 288, 2048, 5001}) {
    const int64_t N = 67;
    Mirror x = mirror(randn(N * C), {N, C}), y = mirror(randn(N * C), {N, C}), w = mirror(randn(C, 0.5f), {C});
    Mirror res = output({N, C}), out = output({N, C}), rstd = output({N});
    cpu_->residual_rms_norm_forward(res.cpu, out.cpu, rstd.cpu, x.cpu, y.cpu, w.cpu, 1e-5f);
    gpu_->residual_rms_norm_forward(res.gpu, out.gpu, rstd.gpu, x.gpu, y.gpu, w.gpu, 1e-5f);
    EXPECT_CLOSE(res, "residual_add");
    EXPECT_CLOSE(out, "rms_norm");
    EXPECT_CLOSE(rstd, "rms_norm");
    Mirror out_seq = output({N, C}), rstd_seq = output({N});
    gpu_->rms_norm_forward(out_seq.gpu, rstd_seq.gpu, res.gpu, w.gpu, 1e-5f);
    EXPECT_EQ(download(out_seq.gpu), download(out.gpu)) << "fused vs unfused on the GPU, C=" << C;
    EXPECT_EQ(download(rstd_seq.gpu), download(rstd.gpu)) << "fused vs unfused on the GPU, C=" << C;
    Mirror out_ip = output({N, C}), rstd_ip = output({N});
    gpu_->residual_rms_norm_forward(x.gpu, out_ip.gpu, rstd_ip.gpu, x.gpu, y.gpu, w.gpu, 1e-5f);
    EXPECT_EQ(download(x.gpu), download(res.gpu)) << "in place, C=" << C;
    EXPECT_EQ(download(out_ip.gpu), download(out.gpu)) << "in place, C=" << C;
  }
}

TEST_F(CudaOps, Rope) {
  for (auto [NH, NKV, HS] : {std::array{4, 4, 64}, std::array{8, 2, 32}, std::array{6, 1, 128}}) {
    const int64_t N = 53, QKV = int64_t(NH + 2 * NKV) * HS, P = 40;
    std::vector<int32_t> pos(N);
    for (int64_t n = 0; n < N; ++n) pos[size_t(n)] = int32_t(n < 30 ? n : n - 30);  // two packed sequences
    Mirror cos = mirror(randn(P * HS / 2), {P, HS / 2}), sin = mirror(randn(P * HS / 2), {P, HS / 2});
    Mirror qkv = mirror(randn(N * QKV), {N, QKV});
    cpu_->rope_forward(qkv.cpu, pos.data(), cos.cpu, sin.cpu, NH, NKV, HS);
    gpu_->rope_forward(qkv.gpu, pos.data(), cos.gpu, sin.gpu, NH, NKV, HS);
    EXPECT_CLOSE(qkv, "rope");
    Mirror dqkv = mirror(randn(N * QKV), {N, QKV});
    cpu_->rope_backward(dqkv.cpu, pos.data(), cos.cpu, sin.cpu, NH, NKV, HS);
    gpu_->rope_backward(dqkv.gpu, pos.data(), cos.gpu, sin.gpu, NH, NKV, HS);
    EXPECT_CLOSE(dqkv, "rope");
  }
}

TEST_F(CudaOps, Swiglu) {
  const int64_t N = 45, FF = 1000;
  Mirror gu = mirror(randn(N * 2 * FF, 3.0f), {N, 2 * FF}), out = output({N, FF});
  cpu_->swiglu_forward(out.cpu, gu.cpu);
  gpu_->swiglu_forward(out.gpu, gu.gpu);
  EXPECT_CLOSE(out, "swiglu");
  Mirror dout = mirror(randn(N * FF), {N, FF}), dgu = output({N, 2 * FF});
  cpu_->swiglu_backward(dgu.cpu, dout.cpu, gu.cpu);
  gpu_->swiglu_backward(dgu.gpu, dout.gpu, gu.gpu);
  EXPECT_CLOSE(dgu, "swiglu");
}

TEST_F(CudaOps, CrossEntropy) {
  for (int64_t V : {97, 32000}) {
    const int64_t N = 41;
    std::vector<int32_t> tgt = randint(N, 0, int32_t(V) - 1);
    for (int64_t n = 0; n < N; n += 4) tgt[size_t(n)] = -100;
    Mirror logits = mirror(randn(N * V, 4.0f), {N, V}), losses = output({N});
    cpu_->cross_entropy_forward(losses.cpu, logits.cpu, tgt.data());
    gpu_->cross_entropy_forward(losses.gpu, logits.gpu, tgt.data());
    EXPECT_CLOSE(losses, "cross_entropy");
    EXPECT_CLOSE(logits, "scale");  // the forward leaves the logits alone
    Mirror losses2 = output({N});
    cpu_->cross_entropy_forward_backward(losses2.cpu, logits.cpu, tgt.data(), 0.37f);
    gpu_->cross_entropy_forward_backward(losses2.gpu, logits.gpu, tgt.data(), 0.37f);
    EXPECT_CLOSE(losses2, "cross_entropy");
    EXPECT_CLOSE(logits, "cross_entropy");  // now dlogits, zero rows where ignored
  }
  std::vector<int32_t> bad(4, 3);
  bad[2] = 97;
  Mirror logits = mirror(randn(4 * 97), {4, 97}), losses = output({4});
  EXPECT_THROW(gpu_->cross_entropy_forward(losses.gpu, logits.gpu, bad.data()), Error);
}

TEST_F(CudaOps, AdamW) {
  const int64_t n = 100003;
  for (auto [wd, step] : {std::pair{0.0f, int64_t(1)}, std::pair{0.1f, int64_t(10)}}) {
    Mirror p = mirror(randn(n), {n}), g = mirror(randn(n, 1e-2f), {n});
    std::vector<float> v0 = randn(n, 1e-3f);
    for (float& x : v0) x = x * x;  // second moments are >= 0
    Mirror m = mirror(randn(n, 1e-3f), {n}), v = mirror(v0, {n});
    const AdamWParams hp{3e-4f, 0.9f, 0.999f, 1e-8f, wd, step};
    cpu_->adamw_step(p.cpu, g.cpu, m.cpu, v.cpu, hp);
    gpu_->adamw_step(p.gpu, g.gpu, m.gpu, v.gpu, hp);
    EXPECT_CLOSE(p, "adamw");
    EXPECT_CLOSE(m, "adamw");
    EXPECT_CLOSE(v, "adamw");
  }
}

TEST_F(CudaOps, Reductions) {
  const int64_t n = 1000037;
  Mirror x = mirror(randn(n), {n});
  const double want = cpu_->sum_squares(x.cpu), got = gpu_->sum_squares(x.gpu);
  EXPECT_LE(std::fabs(got - want) / want, tol("sum_squares")) << got << " vs " << want;
  cpu_->scale(x.cpu, 0.731f);
  gpu_->scale(x.gpu, 0.731f);
  EXPECT_CLOSE(x, "scale");
}

// Packed sequences of uneven lengths (1 included), GQA; SeqLayout.max_seqlen left 0 once so the
// backend computes it.
TEST_F(CudaOps, AttentionThroughTheBackend) {
  const std::vector<int32_t> cu = {0, 1, 70, 200, 263};
  const int64_t N = cu.back();
  for (DType dt : {DType::f32, DType::bf16})
    for (auto [NH, NKV, HS] : {std::array{4, 2, 64}, std::array{2, 2, 128}}) {
      gpu_->set_matmul_dtype(dt);
      const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
      const SeqLayout seqs{cu.data(), int(cu.size()) - 1, dt == DType::f32 ? 130 : 0};
      SeqLayout cpu_seqs = seqs;
      cpu_seqs.max_seqlen = 130;
      Mirror qkv = mirror(randn(N * QKV), {N, QKV}), out = output({N, NH * HS}), lse = output({N, NH});
      cpu_->attention_forward(out.cpu, lse.cpu, qkv.cpu, cpu_seqs, NH, NKV, HS);
      gpu_->attention_forward(out.gpu, lse.gpu, qkv.gpu, seqs, NH, NKV, HS);
      const char* op = dt == DType::f32 ? "attention_fp32" : "attention_bf16";
      EXPECT_CLOSE(out, op);
      EXPECT_CLOSE(lse, op);
      Mirror dout = mirror(randn(N * NH * HS), {N, NH * HS}), dqkv = output({N, QKV});
      cpu_->attention_backward(dqkv.cpu, dout.cpu, qkv.cpu, out.cpu, lse.cpu, cpu_seqs, NH, NKV, HS);
      gpu_->attention_backward(dqkv.gpu, dout.gpu, qkv.gpu, out.gpu, lse.gpu, seqs, NH, NKV, HS);
      EXPECT_CLOSE(dqkv, op);
    }
}

TEST_F(CudaOps, AttentionCached) {
  const int NH = 8, NKV = 2, HS = 64;
  const int64_t P = 300, QKV = int64_t(NH + 2 * NKV) * HS;
  Mirror cache = mirror(randn(P * QKV), {P, QKV});
  for (auto [start, n] : {std::pair<int64_t, int64_t>{0, 280}, std::pair<int64_t, int64_t>{299, 1}}) {
    Mirror out = output({n, NH * HS});
    cpu_->attention_forward_cached(out.cpu, cache.cpu, start, n, NH, NKV, HS);
    gpu_->attention_forward_cached(out.gpu, cache.gpu, start, n, NH, NKV, HS);
    EXPECT_CLOSE(out, "attention_cached");
  }
}

}  // namespace
}  // namespace sft
