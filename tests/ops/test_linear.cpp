// Linear layers of CpuBackend against a plain triple loop in double (forward with bias and
// accumulation, backward dx / dw / dbias, fp32 and bf16 = operands rounded to bf16) on every GEMM
// route that runs on this CPU; a bf16 weight operand bit-equal to the fp32 weight that rounds to it;
// derived weight copies never stale after adamw_step / copy / direct write + invalidate / dealloc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/gemm_route.h"
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

void check_linear(DType dt, int64_t N, int64_t IC, int64_t OC, std::unique_ptr<Backend> be = create_backend("cpu")) {
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

// Every route this CPU can run, for both dtypes (a route is per dtype; both slots get it).
std::vector<cpu::GemmRoute> runnable_routes() {
  const cpu::CpuFeatures& f = cpu::cpu_features();
  std::vector<cpu::GemmRoute> r{cpu::GemmRoute::onednn_fp32};
  if (f.avx512) r.push_back(cpu::GemmRoute::ours_fp32);
  if (f.avx512_bf16) r.push_back(cpu::GemmRoute::ours_bf16), r.push_back(cpu::GemmRoute::onednn_bf16);
  if (f.amx_usable()) r.push_back(cpu::GemmRoute::amx), r.push_back(cpu::GemmRoute::ours_amx);
  return r;
}

// A backend whose GEMMs all take route r (fp32 GEMMs on an fp32 route: ours-bf16 / bf16 oneDNN
// routes only exist for bf16, so fp32 runs on ours-fp32 / onednn-fp32 beside them).
std::unique_ptr<Backend> backend_on(cpu::GemmRoute r) {
  cpu::GemmRoutes routes;
  routes.bf16.route = r;
  routes.fp32.route = r == cpu::GemmRoute::ours_bf16 ? cpu::GemmRoute::ours_fp32
                      : r == cpu::GemmRoute::amx || r == cpu::GemmRoute::onednn_bf16 ? cpu::GemmRoute::onednn_fp32
                      : r == cpu::GemmRoute::ours_amx                                    ? cpu::GemmRoute::ours_fp32
                                                                                         : r;
  cpu::set_gemm_routes_override(&routes);
  auto be = create_backend("cpu");
  cpu::set_gemm_routes_override(nullptr);
  return be;
}

struct LinearOut {
  std::vector<float> out, dx, dw, db;
};

// Forward (accumulating, bias) and backward of one linear with weight tensor w.
LinearOut run_linear(Backend& be, Tensor w, int64_t N, int64_t IC, int64_t OC, uint32_t seed = 1) {
  auto x = randn(size_t(N * IC), seed), b = randn(size_t(OC), seed + 2), dout = randn(size_t(N * OC), seed + 3);
  LinearOut r{randn(size_t(N * OC), seed + 4), std::vector<float>(size_t(N * IC), 0.f), randn(size_t(OC * IC), seed + 5),
              std::vector<float>(size_t(OC), 0.f)};
  be.begin_pass();
  be.linear_forward(Tensor(r.out.data(), DType::f32, {N, OC}), Tensor(x.data(), DType::f32, {N, IC}), w,
                    Tensor(b.data(), DType::f32, {OC}), true);
  be.linear_backward(Tensor(r.dx.data(), DType::f32, {N, IC}), Tensor(r.dw.data(), DType::f32, {OC, IC}),
                     Tensor(r.db.data(), DType::f32, {OC}), Tensor(dout.data(), DType::f32, {N, OC}),
                     Tensor(x.data(), DType::f32, {N, IC}), w, false);
  return r;
}

void expect_bit_equal(const LinearOut& a, const LinearOut& b, const std::string& what) {
  EXPECT_TRUE(a.out == b.out) << what << ": forward differs";
  EXPECT_TRUE(a.dx == b.dx) << what << ": dx differs";
  EXPECT_TRUE(a.dw == b.dw) << what << ": dw differs";
  EXPECT_TRUE(a.db == b.db) << what << ": dbias differs";
}

}  // namespace

TEST(Linear, EveryRouteMatchesTheReference) {
  for (cpu::GemmRoute r : runnable_routes()) {
    SCOPED_TRACE(cpu::gemm_route_name(r));
    for (DType dt : {DType::f32, DType::bf16}) {
      check_linear(dt, 37, 48, 80, backend_on(r));
      check_linear(dt, 130, 288, 96, backend_on(r));
    }
  }
}

// No rows (an empty micro-batch: a data-parallel rank whose share of the epoch's end is empty
// still runs its pass): forward and backward are no-ops on every route and dtype, dw keeps its
// value. oneDNN's primitive creation divides by zero on such shapes (SIGFPE), so they never reach it.
TEST(Linear, NoRowsIsANoOpOnEveryRoute) {
  for (cpu::GemmRoute r : runnable_routes()) {
    SCOPED_TRACE(cpu::gemm_route_name(r));
    for (DType dt : {DType::f32, DType::bf16}) {
      auto be = backend_on(r);
      be->set_matmul_dtype(dt);
      const int64_t IC = 32, OC = 48;
      auto w = randn(size_t(OC * IC), 1), dw = randn(size_t(OC * IC), 2);
      const auto dw0 = dw;
      std::vector<float> db(size_t(OC), 1.0f), unused(1);
      const Tensor none_x(unused.data(), DType::f32, {0, IC}), none_out(unused.data(), DType::f32, {0, OC});
      const Tensor tw(w.data(), DType::f32, {OC, IC});
      be->linear_forward(none_out, none_x, tw, Tensor(), false);
      be->linear_backward(none_x, Tensor(dw.data(), DType::f32, {OC, IC}), Tensor(db.data(), DType::f32, {OC}),
                          none_out, none_x, tw, false);
      EXPECT_EQ(dw, dw0);
      EXPECT_EQ(db, std::vector<float>(size_t(OC), 1.0f));
    }
  }
}

// A bf16 weight operand (a gathered bf16 unit) gives the same bits as the fp32 weight that rounds
// to it, on every route, forward and backward; in fp32 GEMMs it equals the widened fp32 weight.
TEST(Linear, Bf16WeightOperandBitEqualToItsFp32Rounding) {
  const int64_t shapes[][3] = {{37, 48, 80}, {70, 96, 136}, {20, 40, 1000}};  // N, IC, OC
  for (cpu::GemmRoute r : runnable_routes())
    for (const auto& sh : shapes) {
      const int64_t N = sh[0], IC = sh[1], OC = sh[2];
      const auto w = randn(size_t(OC * IC), 11);
      std::vector<uint16_t> w16(w.size());
      std::vector<float> wr(w.size());
      for (size_t i = 0; i < w.size(); ++i) w16[i] = f32_to_bf16(w[i]), wr[i] = bf16_to_f32(w16[i]);
      auto be = backend_on(r);
      const std::string what = std::string(cpu::gemm_route_name(r)) + " OC " + std::to_string(OC);
      be->set_matmul_dtype(DType::bf16);
      const LinearOut from_f32 = run_linear(*be, Tensor(const_cast<float*>(w.data()), DType::f32, {OC, IC}), N, IC, OC);
      const LinearOut from_bf16 = run_linear(*be, Tensor(w16.data(), DType::bf16, {OC, IC}), N, IC, OC);
      expect_bit_equal(from_f32, from_bf16, what + " bf16 GEMMs");
      be->set_matmul_dtype(DType::f32);
      expect_bit_equal(run_linear(*be, Tensor(wr.data(), DType::f32, {OC, IC}), N, IC, OC),
                       run_linear(*be, Tensor(w16.data(), DType::bf16, {OC, IC}), N, IC, OC), what + " fp32 GEMMs");
    }
}

// The derived weight copies a backend keeps across passes (oneDNN bf16 routes) never go stale:
// after adamw_step, copy, fill_zero, scale, a direct write followed by invalidate_weight_copies,
// and a new weight allocated at a freed address, the next linear equals a fresh backend's.
TEST(Linear, WeightCopiesNeverStaleAfterUpdates) {
  const int64_t N = 33, IC = 64, OC = 96;
  for (cpu::GemmRoute r : runnable_routes()) {
    SCOPED_TRACE(cpu::gemm_route_name(r));
    auto be = backend_on(r);
    be->set_matmul_dtype(DType::bf16);
    be->invalidate_weight_copies(nullptr, 0);  // the parameter store's contract: copies live across passes
    const size_t bytes = size_t(OC * IC) * 4;
    float* w = static_cast<float*>(be->alloc(bytes));
    const Tensor tw(w, DType::f32, {OC, IC});
    auto fill = [&](uint32_t seed) {
      const auto v = randn(size_t(OC * IC), seed);
      std::copy(v.begin(), v.end(), w);
    };
    auto fresh = [&] {  // what a backend without copies computes from w's current values
      auto other = backend_on(r);
      other->set_matmul_dtype(DType::bf16);
      return run_linear(*other, tw, N, IC, OC);
    };
    fill(1);
    run_linear(*be, tw, N, IC, OC);  // derives the copies
    // AdamW on the weight
    auto g = randn(size_t(OC * IC), 2);
    std::vector<float> m(g.size(), 0.f), v(g.size(), 0.f);
    be->adamw_step(tw, Tensor(g.data(), DType::f32, {OC, IC}), Tensor(m.data(), DType::f32, {OC, IC}),
                   Tensor(v.data(), DType::f32, {OC, IC}), AdamWParams{0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1});
    expect_bit_equal(run_linear(*be, tw, N, IC, OC), fresh(), "after adamw_step");
    // copy into part of it, scale, fill_zero
    const auto part = randn(size_t(IC), 3);
    be->copy(w + 5 * IC, part.data(), size_t(IC) * 4);
    expect_bit_equal(run_linear(*be, tw, N, IC, OC), fresh(), "after copy");
    be->scale(tw, 0.5f);
    expect_bit_equal(run_linear(*be, tw, N, IC, OC), fresh(), "after scale");
    // a direct write (the parameter store loading or gathering) and its invalidation
    fill(4);
    be->invalidate_weight_copies(w + 10 * IC, size_t(IC) * 4);  // any overlap drops the whole copy
    expect_bit_equal(run_linear(*be, tw, N, IC, OC), fresh(), "after a direct write + invalidate");
    be->fill_zero(tw);
    expect_bit_equal(run_linear(*be, tw, N, IC, OC), fresh(), "after fill_zero");
    // freed and allocated again (often at the same address), written directly: no stale copy
    be->dealloc(w);
    w = static_cast<float*>(be->alloc(bytes));
    const Tensor tw2(w, DType::f32, {OC, IC});
    fill(5);
    auto other = backend_on(r);
    other->set_matmul_dtype(DType::bf16);
    expect_bit_equal(run_linear(*be, tw2, N, IC, OC), run_linear(*other, tw2, N, IC, OC), "after dealloc + alloc");
    be->dealloc(w);
  }
}

// Before a caller uses invalidate_weight_copies, copies last one pass (begin_pass drops them): code
// that writes weights in place (tests, gradient checks) sees its writes.
TEST(Linear, WithoutTheContractCopiesLastOnePass) {
  const int64_t N = 16, IC = 32, OC = 48;
  for (cpu::GemmRoute r : runnable_routes()) {
    SCOPED_TRACE(cpu::gemm_route_name(r));
    auto be = backend_on(r);
    be->set_matmul_dtype(DType::bf16);
    std::vector<float> wv = randn(size_t(OC * IC), 1);
    const Tensor tv(wv.data(), DType::f32, {OC, IC});
    run_linear(*be, tv, N, IC, OC);
    const auto v = randn(size_t(OC * IC), 3);
    std::copy(v.begin(), v.end(), wv.begin());  // in place, no invalidate_weight_copies
    auto other = backend_on(r);
    other->set_matmul_dtype(DType::bf16);
    expect_bit_equal(run_linear(*be, tv, N, IC, OC), run_linear(*other, tv, N, IC, OC), "in-place write, new pass");
  }
}

// bf16 x / dout (bf16 activations, Backend::bf16_activations) are taken only where that is on, and
// a bias gradient needs the fp32 dout: anything else is an error naming the operands and the route.
TEST(Linear, Bf16ActivationOperandsOnlyWhereAllowed) {
  auto be = create_backend("cpu");
  be->set_matmul_dtype(DType::f32);  // fp32 GEMMs: never bf16 activations
  ASSERT_FALSE(be->bf16_activations());
  std::vector<uint16_t> x16(4 * 8, 0x3f80);
  std::vector<float> w(6 * 8, 1.0f), out(4 * 6), dx(4 * 8), dw(6 * 8), db(6);
  try {
    be->linear_forward(Tensor(out.data(), DType::f32, {4, 6}), Tensor(x16.data(), DType::bf16, {4, 8}),
                       Tensor(w.data(), DType::f32, {6, 8}), Tensor(), false);
    FAIL() << "bf16 x accepted under fp32 GEMMs";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("x is bf16, but bf16 activations are off"), std::string::npos) << e.what();
  }
  be->set_matmul_dtype(DType::bf16);
  if (!be->bf16_activations()) GTEST_SKIP() << "no oneDNN bf16 route on this CPU: " << be->route_report();
  std::vector<uint16_t> dout16(4 * 6, 0x3f80);
  try {
    be->linear_backward(Tensor(dx.data(), DType::f32, {4, 8}), Tensor(dw.data(), DType::f32, {6, 8}),
                        Tensor(db.data(), DType::f32, {6}), Tensor(dout16.data(), DType::bf16, {4, 6}),
                        Tensor(x16.data(), DType::bf16, {4, 8}), Tensor(w.data(), DType::f32, {6, 8}), false);
    FAIL() << "bf16 dout accepted with a bias gradient";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("a bias gradient needs an fp32 dout"), std::string::npos) << e.what();
  }
}

TEST(Linear, Fp32) { check_linear(DType::f32, 37, 48, 80); }
TEST(Linear, Fp32Larger) { check_linear(DType::f32, 130, 288, 96); }
TEST(Linear, Bf16OperandsFp32Accumulate) { check_linear(DType::bf16, 37, 48, 80); }
TEST(Linear, Bf16Larger) { check_linear(DType::bf16, 130, 288, 96); }

}  // namespace sft
