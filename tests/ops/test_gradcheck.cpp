// Finite-difference checks of every backward kernel, fast (sft::cpu) and reference
// (sft::cpu::ref): for a random objective J = Σ out·R (R fixed random, J summed in double over the
// reference forward's outputs), central differences (J(x+ε) - J(x-ε)) / (actual 2ε), ε = 1e-3,
// must match the analytic gradient that the backward kernel produces from dout = R.
// Tolerance kFdTol: max|fd - analytic| / max|analytic|. The fp32 forward rounds each output to
// ~6e-8 relative, so J carries noise ~1e-7·|J| and the difference quotient ~1e-4 of the gradient
// scale at ε = 1e-3, while truncation error is O(ε²) ~ 1e-6. Measured worst: 2.3e-4 (cross-entropy); a
// missing term or flipped sign gives errors of order 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/kernels.h"

namespace sft {
namespace {

constexpr double kFdTol = 3e-3;
constexpr float kEps = 1e-3f;

std::vector<float> randn(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * r[i];
  return s;
}

// Central differences of J over the coordinates idx of x (all coordinates when idx is empty).
std::vector<double> fd_grad(std::vector<float>& x, const std::function<double()>& J,
                            std::vector<size_t>& idx) {
  if (idx.empty())
    for (size_t i = 0; i < x.size(); ++i) idx.push_back(i);
  std::vector<double> g;
  for (size_t i : idx) {
    const float x0 = x[i], xp = x0 + kEps, xm = x0 - kEps;
    x[i] = xp;
    const double jp = J();
    x[i] = xm;
    const double jm = J();
    x[i] = x0;
    g.push_back((jp - jm) / (double(xp) - double(xm)));
  }
  return g;
}

void expect_grad(const std::vector<double>& fd, const std::vector<float>& analytic,
                 const std::vector<size_t>& idx, const std::string& what) {
  double m = 0, d = 0;
  for (size_t k = 0; k < idx.size(); ++k) {
    m = std::max(m, std::fabs(double(analytic[idx[k]])));
    d = std::max(d, std::fabs(fd[k] - analytic[idx[k]]));
  }
  ASSERT_GT(m, 0.0) << what;
  EXPECT_LE(d / m, kFdTol) << what << ": max |fd - analytic| " << d << " vs max |grad| " << m;
  if (std::getenv("SFT_TEST_VERBOSE")) std::printf("  fd %-40s err %.3g\n", what.c_str(), d / m);
}

template <class F>
void both(F&& f) {  // f(bool fast)
  f(true);
  f(false);
}

TEST(GradCheck, Embedding) {
  const int64_t V = 6, C = 5, N = 9;
  const std::vector<int32_t> tok = {0, 3, 3, 5, 1, 0, 3, 2, 5};
  auto wte = randn(size_t(V * C), 1), R = randn(size_t(N * C), 2);
  std::vector<float> out(size_t(N * C));
  auto J = [&] {
    cpu::ref::embedding_forward(out.data(), tok.data(), wte.data(), N, C);
    return dot(out, R);
  };
  std::vector<size_t> idx;
  const auto fd = fd_grad(wte, J, idx);
  both([&](bool fast) {
    std::vector<float> dwte(wte.size(), 0.0f);
    (fast ? cpu::embedding_backward : cpu::ref::embedding_backward)(dwte.data(), R.data(), tok.data(), N, C);
    expect_grad(fd, dwte, idx, fast ? "embedding fast" : "embedding ref");
  });
}

TEST(GradCheck, RmsNorm) {
  const int64_t N = 6, C = 19;
  auto x = randn(size_t(N * C), 1), w = randn(size_t(C), 2), R = randn(size_t(N * C), 3);
  std::vector<float> out(size_t(N * C)), rstd(static_cast<size_t>(N));
  auto J = [&] {
    cpu::ref::rms_norm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
    return dot(out, R);
  };
  std::vector<size_t> ix, iw;
  const auto fdx = fd_grad(x, J, ix), fdw = fd_grad(w, J, iw);
  J();  // rstd of the unperturbed input
  both([&](bool fast) {
    std::vector<float> dx(x.size(), 0.0f), dw(w.size(), 0.0f);
    (fast ? cpu::rms_norm_backward : cpu::ref::rms_norm_backward)(dx.data(), dw.data(), R.data(), x.data(),
                                                                  w.data(), rstd.data(), N, C);
    expect_grad(fdx, dx, ix, fast ? "rms_norm dx fast" : "rms_norm dx ref");
    expect_grad(fdw, dw, iw, fast ? "rms_norm dw fast" : "rms_norm dw ref");
  });
}

TEST(GradCheck, Rope) {
  const int NH = 2, NKV = 1, HS = 8, P = 20;
  const int64_t N = 7, QKV = (NH + 2 * NKV) * HS;
  const std::vector<int32_t> pos = {0, 1, 2, 0, 5, 19, 3};
  std::vector<float> cos(size_t(P * HS / 2)), sin(cos.size());
  for (int p = 0; p < P; ++p)
    for (int i = 0; i < HS / 2; ++i) {
      cos[size_t(p * HS / 2 + i)] = std::cos(p * std::pow(10000.0f, -2.0f * i / HS));
      sin[size_t(p * HS / 2 + i)] = std::sin(p * std::pow(10000.0f, -2.0f * i / HS));
    }
  auto qkv = randn(size_t(N * QKV), 1), R = randn(size_t(N * QKV), 2);
  auto J = [&] {
    auto y = qkv;
    cpu::ref::rope_forward(y.data(), pos.data(), cos.data(), sin.data(), N, NH, NKV, HS);
    return dot(y, R);
  };
  std::vector<size_t> idx;
  const auto fd = fd_grad(qkv, J, idx);
  both([&](bool fast) {
    auto d = R;  // in place: dout -> din, v part passes through
    (fast ? cpu::rope_backward : cpu::ref::rope_backward)(d.data(), pos.data(), cos.data(), sin.data(), N,
                                                          NH, NKV, HS);
    expect_grad(fd, d, idx, fast ? "rope fast" : "rope ref");
  });
}

// lens: packed sequences; samples: number of random coordinates to check (0 = all).
void check_attention(const std::vector<int32_t>& lens, int NH, int NKV, int HS, size_t samples) {
  std::vector<int32_t> cu = {0};
  for (int32_t l : lens) cu.push_back(cu.back() + l);
  const SeqLayout seqs{cu.data(), int(lens.size()), *std::max_element(lens.begin(), lens.end())};
  const int64_t N = cu.back(), QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS;
  auto qkv = randn(size_t(N * QKV), 5), R = randn(size_t(N * OC), 6);
  std::vector<float> out(size_t(N * OC)), lse(size_t(N * NH));
  auto J = [&] {
    cpu::ref::attention_forward(out.data(), lse.data(), qkv.data(), seqs, NH, NKV, HS);
    return dot(out, R);
  };
  std::vector<size_t> idx;
  std::mt19937 rng(9);
  for (size_t k = 0; k < samples; ++k) idx.push_back(rng() % qkv.size());
  const auto fd = fd_grad(qkv, J, idx);
  const std::string what = "attention HS=" + std::to_string(HS) + " N=" + std::to_string(N);
  both([&](bool fast) {
    std::vector<float> o(out.size()), l(lse.size()), dqkv(qkv.size());
    (fast ? cpu::attention_forward : cpu::ref::attention_forward)(o.data(), l.data(), qkv.data(), seqs, NH,
                                                                  NKV, HS);
    (fast ? cpu::attention_backward : cpu::ref::attention_backward)(dqkv.data(), R.data(), qkv.data(), o.data(),
                                                                    l.data(), seqs, NH, NKV, HS);
    expect_grad(fd, dqkv, idx, what + (fast ? " fast" : " ref"));
  });
}

TEST(GradCheck, AttentionSmall) { check_attention({5, 1, 9}, 4, 2, 16, 0); }
TEST(GradCheck, AttentionOddHeadDim) { check_attention({4, 1, 6}, 2, 2, 6, 0); }
TEST(GradCheck, AttentionMultiTile) { check_attention({70, 1, 3}, 2, 1, 16, 400); }

TEST(GradCheck, SwiGLU) {
  const int64_t N = 5, FF = 21;
  auto gu = randn(size_t(N * 2 * FF), 1, 2.0f), R = randn(size_t(N * FF), 2);
  std::vector<float> out(size_t(N * FF));
  auto J = [&] {
    cpu::ref::swiglu_forward(out.data(), gu.data(), N, FF);
    return dot(out, R);
  };
  std::vector<size_t> idx;
  const auto fd = fd_grad(gu, J, idx);
  both([&](bool fast) {
    std::vector<float> dgu(gu.size());
    (fast ? cpu::swiglu_backward : cpu::ref::swiglu_backward)(dgu.data(), R.data(), gu.data(), N, FF);
    expect_grad(fd, dgu, idx, fast ? "swiglu fast" : "swiglu ref");
  });
}

TEST(GradCheck, CrossEntropy) {
  const int64_t N = 6, V = 23;
  const float scale = 0.7f;
  auto logits = randn(size_t(N * V), 1, 2.0f);
  const std::vector<int32_t> tgt = {3, -100, 22, 0, 3, 7};
  std::vector<float> loss(static_cast<size_t>(N));
  auto J = [&] {
    cpu::ref::cross_entropy_forward(loss.data(), logits.data(), tgt.data(), N, V);
    double s = 0;
    for (float l : loss) s += double(l) * scale;
    return s;
  };
  std::vector<size_t> idx;
  const auto fd = fd_grad(logits, J, idx);
  both([&](bool fast) {
    auto g = logits;
    (fast ? cpu::cross_entropy_forward_backward : cpu::ref::cross_entropy_forward_backward)(
        loss.data(), g.data(), tgt.data(), N, V, scale);
    expect_grad(fd, g, idx, fast ? "cross_entropy fast" : "cross_entropy ref");
  });
}

}  // namespace
}  // namespace sft
