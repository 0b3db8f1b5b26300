// Fast CPU kernels (sft::cpu) against their plain references (sft::cpu::ref) on random inputs:
// every op, several shapes (HS 16/48/64/128 and the non-multiple-of-16 fallback, GQA, packed
// sequences of lengths 1 to 300), AVX-512 and generic paths (SFT_CPU_ISA=generic), accumulation
// semantics (+= vs =), cross-entropy input validation, and the residual-fused RMSNorm bit for bit
// against the add followed by rms_norm_forward. Tolerances are in kTol below.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/kernels.h"

namespace sft {
namespace {

// Allowed normalised error max|fast - ref| / max|ref| per op. The references accumulate in
// double; the fast kernels accumulate in fp32 across vector lanes and tiles and use polynomial
// exp/exp2 (about 1 ulp), so errors are a few fp32 ulps (6e-8) grown by sum length. Each bound is
// about 10x the worst error measured over all shapes here on both code paths (AVX-512 and
// generic; measured worst in the comments), and still at least 100x below what a wrong index,
// mask or missing term produces (> 1e-3; see the deliberate-break check in the report).
struct Tol {
  const char* op;
  double max_err;
};
constexpr Tol kTol[] = {
    {"embedding", 0.0},       // pure copies and row-ordered adds: bit-identical
    {"rms_norm", 3e-6},       // 2.6e-7: fp32 lane sums over C vs double
    {"rms_norm_dw", 2e-6},    // 1.7e-7: per-block fp32 partial sums over N
    {"rope", 1e-6},           // 1.1e-7 (inverse round trip); forward/backward bit-identical
    {"attention", 1e-5},      // 1.3e-6: online softmax, exp2 polynomial, fp32 tile GEMMs
    {"attention_bwd", 3e-5},  // 2.7e-6: dS = P (dP - D) cancels; dk/dv sum over heads and tiles
    {"swiglu", 3e-6},         // 2.4e-7
    {"cross_entropy", 5e-7},  // 4.0e-8: Σ exp accumulated in double on both sides
    {"adamw", 0.0},           // same fp32 expression order as the reference: bit-identical
    {"sum_squares", 1e-12},   // double sums in another order (the reference's own error ~1e-13)
};

double tol(const std::string& op) {
  for (const Tol& t : kTol)
    if (op == t.op) return t.max_err;
  ADD_FAILURE() << "no tolerance for " << op;
  return 0;
}

std::vector<float> randn(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double max_err(const std::vector<float>& got, const std::vector<float>& want) {
  double m = 0, d = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    m = std::max(m, double(std::fabs(want[i])));
    d = std::max(d, std::fabs(double(got[i]) - want[i]));
  }
  return m > 0 ? d / m : d;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  const std::string& op, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (float x : got) ASSERT_TRUE(std::isfinite(x)) << op << " " << what << ": non-finite output";
  const double e = max_err(got, want);
  EXPECT_LE(e, tol(op)) << op << " " << what;
  if (std::getenv("SFT_TEST_VERBOSE")) std::printf("  %-14s %-40s err %.3g\n", op.c_str(), what.c_str(), e);
}

// Runs a test body on the AVX-512 path (where the CPU has it) and on the generic path.
class Isa : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) setenv("SFT_CPU_ISA", "generic", 1);
  }
  void TearDown() override { unsetenv("SFT_CPU_ISA"); }
  std::string tag() const { return GetParam() ? "generic" : "default"; }
};
INSTANTIATE_TEST_SUITE_P(Ops, Isa, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "generic" : "native"; });

TEST_P(Isa, Embedding) {
  const int64_t V = 50, C = 200, N = 300;
  std::vector<int32_t> tok(N);
  std::mt19937 rng(7);
  for (auto& t : tok) t = int32_t(rng() % V);  // many repeats
  auto wte = randn(size_t(V * C), 1), dout = randn(size_t(N * C), 2);
  std::vector<float> out(size_t(N * C)), out_ref(out.size());
  cpu::embedding_forward(out.data(), tok.data(), wte.data(), N, C);
  cpu::ref::embedding_forward(out_ref.data(), tok.data(), wte.data(), N, C);
  expect_close(out, out_ref, "embedding", "forward");
  auto dwte = randn(size_t(V * C), 3), dwte_ref = dwte;  // accumulates onto existing values
  cpu::embedding_backward(dwte.data(), dout.data(), tok.data(), N, C);
  cpu::ref::embedding_backward(dwte_ref.data(), dout.data(), tok.data(), N, C);
  expect_close(dwte, dwte_ref, "embedding", "backward");
}

TEST_P(Isa, RmsNorm) {
  for (auto [N, C] : {std::pair<int64_t, int64_t>{1, 7}, {37, 288}, {600, 768}, {129, 2051}}) {
    const std::string what = tag() + " N=" + std::to_string(N) + " C=" + std::to_string(C);
    auto x = randn(size_t(N * C), 1, 3.0f), w = randn(size_t(C), 2), dout = randn(size_t(N * C), 3);
    std::vector<float> out(size_t(N * C)), out_ref(out.size()), rstd(static_cast<size_t>(N)), rstd_ref(rstd.size());
    cpu::rms_norm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
    cpu::ref::rms_norm_forward(out_ref.data(), rstd_ref.data(), x.data(), w.data(), N, C, 1e-5f);
    expect_close(out, out_ref, "rms_norm", what + " out");
    expect_close(rstd, rstd_ref, "rms_norm", what + " rstd");
    auto dx = randn(size_t(N * C), 4), dx_ref = dx;  // dx accumulates (residual stream)
    auto dw = randn(size_t(C), 5), dw_ref = dw;      // dw accumulates (parameter grad)
    cpu::rms_norm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd_ref.data(), N, C);
    cpu::ref::rms_norm_backward(dx_ref.data(), dw_ref.data(), dout.data(), x.data(), w.data(),
                                rstd_ref.data(), N, C);
    expect_close(dx, dx_ref, "rms_norm", what + " dx");
    expect_close(dw, dw_ref, "rms_norm_dw", what + " dw");
  }
}

// res = x + y then RMSNorm, fused: res bit-identical to the reference's fp32 add, out and rstd
// within the rms_norm tolerance of the double reference, and all three bit-identical to the add
// followed by rms_norm_forward (the unfused sequence the model ran before); also in place
// (res aliasing x) and through CpuBackend.
TEST_P(Isa, ResidualRmsNorm) {
  for (auto [N, C] : {std::pair<int64_t, int64_t>{1, 7}, {37, 288}, {600, 768}, {129, 2051}, {5, 4099}}) {
    const std::string what = tag() + " N=" + std::to_string(N) + " C=" + std::to_string(C);
    const size_t NC = size_t(N * C);
    auto x = randn(NC, 11, 3.0f), y = randn(NC, 12), w = randn(size_t(C), 13);
    std::vector<float> res(NC), out(NC), rstd(static_cast<size_t>(N));
    std::vector<float> res_ref(NC), out_ref(NC), rstd_ref(static_cast<size_t>(N));
    cpu::residual_rms_norm_forward(res.data(), out.data(), rstd.data(), x.data(), y.data(), w.data(), N, C,
                                   1e-5f);
    cpu::ref::residual_rms_norm_forward(res_ref.data(), out_ref.data(), rstd_ref.data(), x.data(), y.data(),
                                        w.data(), N, C, 1e-5f);
    EXPECT_EQ(res, res_ref) << what << ": res = x + y is one fp32 add";
    expect_close(out, out_ref, "rms_norm", what + " fused out");
    expect_close(rstd, rstd_ref, "rms_norm", what + " fused rstd");
    // The unfused sequence on the fast kernels: bit-identical.
    std::vector<float> out_seq(NC), rstd_seq(static_cast<size_t>(N));
    cpu::rms_norm_forward(out_seq.data(), rstd_seq.data(), res_ref.data(), w.data(), N, C, 1e-5f);
    EXPECT_EQ(out, out_seq) << what << ": fused vs add + rms_norm_forward";
    EXPECT_EQ(rstd, rstd_seq) << what << ": fused vs add + rms_norm_forward";
    // In place: res is x.
    std::vector<float> xs = x, out_ip(NC), rstd_ip(static_cast<size_t>(N));
    cpu::residual_rms_norm_forward(xs.data(), out_ip.data(), rstd_ip.data(), xs.data(), y.data(), w.data(), N,
                                   C, 1e-5f);
    EXPECT_EQ(xs, res) << what << " in place";
    EXPECT_EQ(out_ip, out) << what << " in place";
  }
  auto be = create_backend("cpu");
  const int64_t N = 9, C = 40;
  auto x = randn(size_t(N * C), 21), y = randn(size_t(N * C), 22), w = randn(size_t(C), 23);
  std::vector<float> res(x.size()), out(x.size()), rstd(static_cast<size_t>(N)), out_seq(x.size()), rstd_seq(static_cast<size_t>(N));
  const auto t = [](std::vector<float>& v, std::initializer_list<int64_t> d) { return Tensor(v.data(), DType::f32, d); };
  be->residual_rms_norm_forward(t(res, {N, C}), t(out, {N, C}), t(rstd, {N}), t(x, {N, C}), t(y, {N, C}),
                                t(w, {C}), 1e-6f);
  be->rms_norm_forward(t(out_seq, {N, C}), t(rstd_seq, {N}), t(res, {N, C}), t(w, {C}), 1e-6f);
  EXPECT_EQ(out, out_seq) << "CpuBackend";
  EXPECT_EQ(rstd, rstd_seq) << "CpuBackend";
  std::vector<float> small(size_t(N * C - 1));
  EXPECT_THROW(be->residual_rms_norm_forward(t(res, {N, C}), t(out, {N, C}), t(rstd, {N}), t(x, {N, C}),
                                             t(small, {N * C - 1}), t(w, {C}), 1e-6f),
               Error)
      << "y with one element missing";
}

struct RopeTables {
  std::vector<float> cos, sin;  // (P, HS/2)
  RopeTables(int P, int HS) : cos(size_t(P) * (HS / 2)), sin(cos.size()) {
    for (int p = 0; p < P; ++p)
      for (int i = 0; i < HS / 2; ++i) {
        const float inv_freq = float(1.0 / std::pow(10000.0, 2.0 * i / HS));
        cos[size_t(p * (HS / 2) + i)] = std::cos(float(p) * inv_freq);
        sin[size_t(p * (HS / 2) + i)] = std::sin(float(p) * inv_freq);
      }
  }
};

TEST_P(Isa, Rope) {
  for (auto [NH, NKV, HS] : {std::tuple{4, 2, 64}, {6, 6, 48}, {2, 1, 128}, {3, 1, 6}}) {
    const int64_t N = 257, QKV = int64_t(NH + 2 * NKV) * HS;
    RopeTables tab(300, HS);
    std::vector<int32_t> pos(N);
    for (int64_t n = 0; n < N; ++n) pos[size_t(n)] = int32_t(n < 100 ? n : (n - 100) * 3 % 300);
    auto qkv = randn(size_t(N * QKV), 1), qkv_ref = qkv;
    const std::string what = tag() + " HS=" + std::to_string(HS);
    cpu::rope_forward(qkv.data(), pos.data(), tab.cos.data(), tab.sin.data(), N, NH, NKV, HS);
    cpu::ref::rope_forward(qkv_ref.data(), pos.data(), tab.cos.data(), tab.sin.data(), N, NH, NKV, HS);
    expect_close(qkv, qkv_ref, "rope", what + " forward");
    cpu::rope_backward(qkv.data(), pos.data(), tab.cos.data(), tab.sin.data(), N, NH, NKV, HS);
    cpu::ref::rope_backward(qkv_ref.data(), pos.data(), tab.cos.data(), tab.sin.data(), N, NH, NKV, HS);
    expect_close(qkv, qkv_ref, "rope", what + " backward");
    // backward ∘ forward is the identity (orthogonal rotation), v untouched
    expect_close(qkv, randn(size_t(N * QKV), 1), "rope", what + " inverse");
  }
}

// Attention shapes: packed layouts incl. a length-1 sequence and ones longer than a 64-row tile.
struct AttnCase {
  std::vector<int32_t> lens;
  int NH, NKV, HS;
};
const AttnCase kAttnCases[] = {
    {{150, 1, 77}, 4, 2, 64},  {{150, 1, 77}, 6, 6, 48},  {{70, 1, 130}, 4, 2, 128},
    {{300, 200, 100}, 6, 6, 64}, {{64, 65, 1}, 4, 1, 16}, {{100, 1, 37}, 4, 2, 40},
    {{90, 3}, 2, 2, 8},
};

SeqLayout make_layout(const std::vector<int32_t>& lens, std::vector<int32_t>& cu) {
  cu.assign(1, 0);
  for (int32_t l : lens) cu.push_back(cu.back() + l);
  return {cu.data(), int(lens.size()), *std::max_element(lens.begin(), lens.end())};
}

TEST_P(Isa, Attention) {
  for (const AttnCase& ac : kAttnCases) {
    std::vector<int32_t> cu;
    const SeqLayout seqs = make_layout(ac.lens, cu);
    const int64_t N = cu.back(), QKV = int64_t(ac.NH + 2 * ac.NKV) * ac.HS, OC = int64_t(ac.NH) * ac.HS;
    std::string what = tag() + " NH=" + std::to_string(ac.NH) + " NKV=" + std::to_string(ac.NKV) +
                       " HS=" + std::to_string(ac.HS) + " N=" + std::to_string(N);
    auto qkv = randn(size_t(N * QKV), 11, 1.5f), dout = randn(size_t(N * OC), 12);
    std::vector<float> out(size_t(N * OC)), out_ref(out.size()), lse(size_t(N * ac.NH)), lse_ref(lse.size());
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), seqs, ac.NH, ac.NKV, ac.HS);
    cpu::ref::attention_forward(out_ref.data(), lse_ref.data(), qkv.data(), seqs, ac.NH, ac.NKV, ac.HS);
    expect_close(out, out_ref, "attention", what + " out");
    expect_close(lse, lse_ref, "attention", what + " lse");
    std::vector<float> dqkv(size_t(N * QKV), 123.0f), dqkv_ref(dqkv.size());  // written, not +=
    cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), out_ref.data(), lse_ref.data(), seqs,
                            ac.NH, ac.NKV, ac.HS);
    cpu::ref::attention_backward(dqkv_ref.data(), dout.data(), qkv.data(), out_ref.data(),
                                 lse_ref.data(), seqs, ac.NH, ac.NKV, ac.HS);
    // compare q, k and v parts separately so a wrong part cannot hide behind a larger one
    const int64_t part[4] = {0, int64_t(ac.NH) * ac.HS, int64_t(ac.NH + ac.NKV) * ac.HS, QKV};
    const char* names[3] = {" dq", " dk", " dv"};
    for (int p = 0; p < 3; ++p) {
      std::vector<float> a, b;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t e = part[p]; e < part[p + 1]; ++e) {
          a.push_back(dqkv[size_t(n * QKV + e)]);
          b.push_back(dqkv_ref[size_t(n * QKV + e)]);
        }
      expect_close(a, b, "attention_bwd", what + names[p]);
    }
  }
}

TEST_P(Isa, SwiGLU) {
  for (int64_t FF : {1, 37, 768, 1376}) {
    const int64_t N = 65;
    auto gu = randn(size_t(N * 2 * FF), 1, 3.0f), dout = randn(size_t(N * FF), 2);
    gu[0] = -120.0f;  // far tails of the exponential
    if (FF > 1) gu[1] = 95.0f;
    std::vector<float> out(size_t(N * FF)), out_ref(out.size());
    cpu::swiglu_forward(out.data(), gu.data(), N, FF);
    cpu::ref::swiglu_forward(out_ref.data(), gu.data(), N, FF);
    const std::string what = tag() + " FF=" + std::to_string(FF);
    expect_close(out, out_ref, "swiglu", what + " forward");
    std::vector<float> dgu(gu.size(), 7.0f), dgu_ref(gu.size());
    cpu::swiglu_backward(dgu.data(), dout.data(), gu.data(), N, FF);
    cpu::ref::swiglu_backward(dgu_ref.data(), dout.data(), gu.data(), N, FF);
    expect_close(dgu, dgu_ref, "swiglu", what + " backward");
  }
}

TEST_P(Isa, CrossEntropy) {
  for (int64_t V : {1, 17, 1000, 32000}) {
    const int64_t N = 70;
    auto logits = randn(size_t(N * V), 1, 4.0f);
    logits[3] = 60.0f;  // a dominant logit
    std::vector<int32_t> tgt(N);
    std::mt19937 rng(3);
    for (int64_t n = 0; n < N; ++n) tgt[size_t(n)] = n % 5 == 2 ? -100 : int32_t(rng() % V);
    std::vector<float> loss(static_cast<size_t>(N)), loss_ref(loss.size());
    const std::string what = tag() + " V=" + std::to_string(V);
    cpu::cross_entropy_forward(loss.data(), logits.data(), tgt.data(), N, V);
    cpu::ref::cross_entropy_forward(loss_ref.data(), logits.data(), tgt.data(), N, V);
    expect_close(loss, loss_ref, "cross_entropy", what + " forward");
    auto g = logits, g_ref = logits;
    cpu::cross_entropy_forward_backward(loss.data(), g.data(), tgt.data(), N, V, 0.37f);
    cpu::ref::cross_entropy_forward_backward(loss_ref.data(), g_ref.data(), tgt.data(), N, V, 0.37f);
    expect_close(loss, loss_ref, "cross_entropy", what + " fused losses");
    expect_close(g, g_ref, "cross_entropy", what + " dlogits");
    for (int64_t v = 0; v < V; ++v) EXPECT_EQ(g[size_t(2 * V + v)], 0.0f);  // ignored row zeroed
    // the bf16 form (bf16 activations): the same losses, dlogits equal to rounding the fp32
    // kernel's bit for bit, the logits untouched
    std::vector<float> loss16(loss.size());
    std::vector<uint16_t> g16(size_t(N * V), 0xffff);
    const auto before = logits;
    cpu::cross_entropy_forward_backward_bf16(loss16.data(), logits.data(), tgt.data(), N, V, 0.37f, g16.data());
    EXPECT_EQ(loss16, loss) << what;
    EXPECT_EQ(logits, before) << what;
    size_t differ = 0;
    for (size_t i = 0; i < g16.size(); ++i) differ += g16[i] != f32_to_bf16(g[i]);
    EXPECT_EQ(differ, 0u) << what << ": bf16 dlogits differ from the fp32 kernel's rounding";
  }
}

TEST(Ops, CrossEntropyRejectsBadTarget) {
  std::vector<float> logits(20, 0.0f), loss(2);
  std::vector<int32_t> bad = {3, 10};  // V = 10
  EXPECT_THROW(cpu::cross_entropy_forward(loss.data(), logits.data(), bad.data(), 2, 10), Error);
  EXPECT_THROW(cpu::cross_entropy_forward_backward(loss.data(), logits.data(), bad.data(), 2, 10, 1.0f), Error);
  EXPECT_THROW(cpu::ref::cross_entropy_forward(loss.data(), logits.data(), bad.data(), 2, 10), Error);
  bad[1] = -5;
  try {
    cpu::cross_entropy_forward(loss.data(), logits.data(), bad.data(), 2, 10);
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "[cross_entropy] target -5 at token 1 outside vocab 10");
  }
}

TEST(Ops, AdamW) {
  const int64_t n = 100003;
  auto p = randn(size_t(n), 1), g = randn(size_t(n), 2, 0.1f);
  std::vector<float> m(size_t(n), 0.0f), v(size_t(n), 0.0f);
  auto p_ref = p, m_ref = m, v_ref = v;
  for (int64_t step = 1; step <= 3; ++step) {
    const AdamWParams hp{2e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, step};
    cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, hp);
    cpu::ref::adamw_step(p_ref.data(), g.data(), m_ref.data(), v_ref.data(), n, hp);
  }
  expect_close(p, p_ref, "adamw", "param");
  expect_close(m, m_ref, "adamw", "m");
  expect_close(v, v_ref, "adamw", "v");
  // First step from zero moments: update = -lr · g/(|g| + eps·...) ≈ -lr·sign(g), after decay.
  std::vector<float> p1 = {1.0f}, g1 = {0.5f}, m1 = {0.0f}, v1 = {0.0f};
  cpu::adamw_step(p1.data(), g1.data(), m1.data(), v1.data(), 1, {0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1});
  EXPECT_NEAR(p1[0], 1.0f * (1 - 0.1f * 0.01f) - 0.1f, 1e-6);
}

// Clipping's factor inside the update (grad_scale) is bit-identical to scaling the gradients in
// place first (torch's clip_grad_norm_ then step), on both the AVX-512 and the generic path, and
// leaves the gradients unwritten.
TEST(Ops, AdamWGradScaleEqualsScalingTheGradientsFirst) {
  const int64_t n = 70001;
  const float factor = 0.3127f;
  for (bool generic : {false, true}) {
    if (generic) setenv("SFT_CPU_ISA", "generic", 1);
    auto p = randn(size_t(n), 21), g = randn(size_t(n), 22, 0.1f);
    std::vector<float> m(size_t(n), 0.0f), v(size_t(n), 0.0f);
    auto p2 = p, m2 = m, v2 = v, g2 = g;
    for (auto& x : g2) x *= factor;
    const auto g_before = g;
    for (int64_t step = 1; step <= 2; ++step) {
      AdamWParams hp{2e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, step};
      cpu::adamw_step(p2.data(), g2.data(), m2.data(), v2.data(), n, hp);
      hp.grad_scale = factor;
      cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, hp);
    }
    unsetenv("SFT_CPU_ISA");
    EXPECT_EQ(p, p2) << (generic ? "generic" : "avx512");
    EXPECT_EQ(m, m2);
    EXPECT_EQ(v, v2);
    EXPECT_EQ(g, g_before);
  }
}

// The AVX-512 element-wise kernels round like the generic loops, one rounding per operation:
// AdamW, RoPE and RMSNorm (forward, fused forward, backward) must be bit-identical on both paths
// (odd sizes cover the masked tails; N*C large enough to run multi-threaded).
TEST(Ops, ElementwiseAvx512MatchesGenericBitwise) {
  auto run = [](bool generic, auto&& body) {
    if (generic) setenv("SFT_CPU_ISA", "generic", 1);
    body();
    unsetenv("SFT_CPU_ISA");
  };
  {  // AdamW, 3 steps
    const int64_t n = 300007;
    std::vector<float> out[2][3];
    for (int gen = 0; gen < 2; ++gen) {
      auto p = randn(size_t(n), 11), g = randn(size_t(n), 12, 0.1f);
      std::vector<float> m(size_t(n), 0.0f), v(size_t(n), 0.0f);
      run(gen, [&] {
        for (int64_t step = 1; step <= 3; ++step)
          cpu::adamw_step(p.data(), g.data(), m.data(), v.data(), n, {2e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step});
      });
      out[gen][0] = p, out[gen][1] = m, out[gen][2] = v;
    }
    for (int k = 0; k < 3; ++k) EXPECT_EQ(out[0][k], out[1][k]) << "adamw " << k;
  }
  for (int HS : {64, 18}) {  // RoPE forward then backward
    const int NH = 3, NKV = 1;
    const int64_t N = 701, QKV = int64_t(NH + 2 * NKV) * HS;
    auto cs = randn(size_t(1024 * HS / 2), 13), sn = randn(size_t(1024 * HS / 2), 14);
    std::vector<int32_t> pos(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) pos[size_t(i)] = int32_t((i * 7) % 1024);
    std::vector<float> fwd[2], bwd[2];
    for (int gen = 0; gen < 2; ++gen) {
      auto q = randn(size_t(N * QKV), 15);
      run(gen, [&] {
        cpu::rope_forward(q.data(), pos.data(), cs.data(), sn.data(), N, NH, NKV, HS);
        fwd[gen] = q;
        cpu::rope_backward(q.data(), pos.data(), cs.data(), sn.data(), N, NH, NKV, HS);
        bwd[gen] = q;
      });
    }
    EXPECT_EQ(fwd[0], fwd[1]) << "rope forward HS " << HS;
    EXPECT_EQ(bwd[0], bwd[1]) << "rope backward HS " << HS;
  }
  {  // RMSNorm
    const int64_t N = 517, C = 200;
    auto x = randn(size_t(N * C), 16), y = randn(size_t(N * C), 17), w = randn(size_t(C), 18);
    auto dout = randn(size_t(N * C), 19);
    std::vector<float> res[2][6];
    for (int gen = 0; gen < 2; ++gen) {
      std::vector<float> out(static_cast<size_t>(N * C)), rstd(static_cast<size_t>(N)), rs(out), out2(out), rstd2(rstd);
      auto dx = randn(size_t(N * C), 20), dw = randn(size_t(C), 21);
      run(gen, [&] {
        cpu::rms_norm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
        cpu::residual_rms_norm_forward(rs.data(), out2.data(), rstd2.data(), x.data(), y.data(), w.data(), N, C, 1e-5f);
        cpu::rms_norm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
      });
      res[gen][0] = out, res[gen][1] = rstd, res[gen][2] = out2, res[gen][3] = rstd2;
      res[gen][4] = dx, res[gen][5] = dw;
    }
    for (int k = 0; k < 6; ++k) EXPECT_EQ(res[0][k], res[1][k]) << "rms_norm output " << k;
  }
}

TEST(Ops, SumSquares) {
  for (int64_t n : {0, 1, 1000, (1 << 16) + 1, 1 << 20}) {
    auto x = randn(size_t(n), 9);
    const double got = cpu::sum_squares(x.data(), n), want = cpu::ref::sum_squares(x.data(), n);
    EXPECT_LE(std::fabs(got - want), tol("sum_squares") * std::max(want, 1.0)) << n;
  }
}

}  // namespace
}  // namespace sft
