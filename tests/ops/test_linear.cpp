// Linear layers through oneDNN (CpuBackend) against a plain triple loop in double: forward with
// bias and accumulation, backward dx / dw / dbias, in fp32 and in bf16 (operands rounded to bf16).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "ops_test_util.h"

namespace sft {

namespace {

using test::randn;

float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }


void expect_close(const std::vector<float>& got, const std::vector<double>& want, double rel, const char* what) {
  double m = 0, d = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    m = std::max(m, std::fabs(want[i]));
    d = std::max(d, std::fabs(got[i] - want[i]));
  }
  EXPECT_LE(d, rel * m) << what << ": max diff " << d << " vs max |ref| " << m;
}

void check_linear(DType dt, int64_t N, int64_t IC, int64_t OC) {
  auto be = create_backend("cpu");
  be->set_matmul_dtype(dt);
  auto x = randn(size_t(N * IC), 1), w = randn(size_t(OC * IC), 2), b = randn(size_t(OC), 3);
  auto dout = randn(size_t(N * OC), 4), init = randn(size_t(N * OC), 5);
  auto op = [&](float v) { return dt == DType::bf16 ? round_bf16(v) : v; };
  // forward, accumulating into init
  std::vector<float> out = init;
  be->linear_forward(Tensor(out.data(), DType::f32, {N, OC}), Tensor(x.data(), DType::f32, {N, IC}),
                     Tensor(w.data(), DType::f32, {OC, IC}), Tensor(b.data(), DType::f32, {OC}), true);
  std::vector<double> ref(size_t(N * OC));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o) {
      double s = init[size_t(n * OC + o)] + b[size_t(o)];
      for (int64_t i = 0; i < IC; ++i) s += double(op(x[size_t(n * IC + i)])) * op(w[size_t(o * IC + i)]);
      ref[size_t(n * OC + o)] = s;
    }
  // fp32 accumulation over IC terms: a few ulps times sqrt(IC) is far below 1e-5 here.
  expect_close(out, ref, 1e-5, "forward");
  // backward: dx = dout·w, dw += doutᵀ·x (onto a non-zero start), db += Σ dout
  std::vector<float> dx(size_t(N * IC), 0.f), dw = randn(size_t(OC * IC), 6), db = randn(size_t(OC), 7);
  const std::vector<float> dw0 = dw, db0 = db;
  be->linear_backward(Tensor(dx.data(), DType::f32, {N, IC}), Tensor(dw.data(), DType::f32, {OC, IC}),
                      Tensor(db.data(), DType::f32, {OC}), Tensor(dout.data(), DType::f32, {N, OC}),
                      Tensor(x.data(), DType::f32, {N, IC}), Tensor(w.data(), DType::f32, {OC, IC}), false);
  std::vector<double> rdx(size_t(N * IC)), rdw(size_t(OC * IC)), rdb(static_cast<size_t>(OC));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < IC; ++i) {
      double s = 0;
      for (int64_t o = 0; o < OC; ++o) s += double(op(dout[size_t(n * OC + o)])) * op(w[size_t(o * IC + i)]);
      rdx[size_t(n * IC + i)] = s;
    }
  for (int64_t o = 0; o < OC; ++o) {
    double sb = db0[size_t(o)];
    for (int64_t n = 0; n < N; ++n) sb += dout[size_t(n * OC + o)];
    rdb[size_t(o)] = sb;
    for (int64_t i = 0; i < IC; ++i) {
      double s = dw0[size_t(o * IC + i)];
      for (int64_t n = 0; n < N; ++n) s += double(op(dout[size_t(n * OC + o)])) * op(x[size_t(n * IC + i)]);
      rdw[size_t(o * IC + i)] = s;
    }
  }
  expect_close(dx, rdx, 1e-5, "dx");
  expect_close(dw, rdw, 1e-5, "dw");
  expect_close(db, rdb, 1e-5, "dbias");
}

}  // namespace

TEST(Linear, Fp32) { check_linear(DType::f32, 37, 48, 80); }
TEST(Linear, Fp32Larger) { check_linear(DType::f32, 130, 288, 96); }
TEST(Linear, Bf16OperandsFp32Accumulate) { check_linear(DType::bf16, 37, 48, 80); }
TEST(Linear, Bf16Larger) { check_linear(DType::bf16, 130, 288, 96); }

}  // namespace sft
