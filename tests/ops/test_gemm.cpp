// Our AVX-512 GEMM (backend/cpu/gemm.h) against the double reference ref::gemm: the three linear
// forms (forward x·wᵀ, dx = dout·w, dw += doutᵀ·x) and the fourth transpose pair, fp32 and bf16,
// ragged sizes (1, primes, several k- and n-blocks), leading dimensions past the row, bias and
// accumulation, 1 and 2 threads; bf16 rounding bit-exact to f32_to_bf16; CpuBackend's two GEMM
// routes (default; SFT_GEMM=onednn) agreeing. GemmBench (disabled by default: run with
// --gtest_also_run_disabled_tests) prints GFLOP/s of ours and oneDNN on the model's shapes, and of
// CpuBackend's linear layers on this CPU's route (bf16: AMX where usable).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/gemm.h"
#include "backend/cpu/gemm_route.h"
#include "backend/cpu/pack_b.h"
#include "core/aligned_vector.h"
#include "core/dtype.h"
#include "ops_test_util.h"

namespace sft {
namespace {

using cpu::GemmArgs;

using test::randn;

std::vector<float> abs_of(std::vector<float> v) {
  for (auto& x : v) x = std::fabs(x);
  return v;
}

struct Case {
  bool trans_a, trans_b;
  int64_t M, N, K;
  bool bias, accumulate;
  int64_t pad = 0;  // extra elements per stored row of A, B and C
};

// Runs ours on one case and checks every element: |ours - ref| <= (K + 3) u Σ_k |a_k b_k| (+ |C0| +
// |bias|), u = 2^-24, the worst-case bound of fp32 sums of K + 2 terms in any order (the operands,
// bf16-rounded or not, are the same in both, and bf16 products are exact in fp32). Returns the
// largest error as a fraction of that bound.
// run: the implementation under test (default: ours on AVX-512, fp32 or bf16 by `bf16`).
double check_case(const Case& c, bool bf16, uint32_t seed, const std::function<void(const GemmArgs&)>& run = {}) {
  const int64_t a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
  const int64_t b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
  const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.N + c.pad;
  const auto A = randn(size_t(a_rows * lda), seed), B = randn(size_t(b_rows * ldb), seed + 1);
  const auto C0 = randn(size_t(c.M * ldc), seed + 2), bias = randn(size_t(c.N), seed + 3);
  std::vector<float> got = C0, want = C0;
  GemmArgs g{.trans_a = c.trans_a, .trans_b = c.trans_b, .M = c.M, .N = c.N, .K = c.K, .A = A.data(),
             .lda = lda, .B = B.data(), .ldb = ldb, .C = got.data(), .ldc = ldc,
             .bias = c.bias ? bias.data() : nullptr, .accumulate = c.accumulate};
  if (run) run(g);
  else if (bf16) cpu::gemm_bf16_avx512(g);
  else cpu::gemm_f32_avx512(g);
  g.C = want.data();
  cpu::ref::gemm(g, bf16);
  // Σ|terms| from the same reference on absolute values (|round(x)| = round(|x|))
  const auto aA = abs_of(A), aB = abs_of(B), aBias = abs_of(bias);
  std::vector<float> mag = abs_of(C0);
  g.A = aA.data(), g.B = aB.data(), g.bias = c.bias ? aBias.data() : nullptr, g.C = mag.data();
  cpu::ref::gemm(g, bf16);
  double worst = 0;
  for (int64_t m = 0; m < c.M; ++m) {
    for (int64_t n = 0; n < ldc; ++n) {
      const size_t i = size_t(m * ldc + n);
      if (n >= c.N) {  // padding past the row stays untouched
        EXPECT_EQ(got[i], C0[i]) << "wrote past N at row " << m;
        continue;
      }
      const double bound = (double(c.K) + 3) * std::ldexp(1.0, -24) * mag[i] + 1e-30;
      const double err = std::fabs(double(got[i]) - want[i]);
      worst = std::max(worst, err / bound);
      if (err > bound) {
        ADD_FAILURE() << "M " << c.M << " N " << c.N << " K " << c.K << " ta " << c.trans_a << " tb "
                      << c.trans_b << " bf16 " << bf16 << ": C[" << m << "][" << n << "] = " << got[i]
                      << ", want " << want[i] << " (bound " << bound << ")";
        return worst;
      }
    }
  }
  return worst;
}

std::vector<Case> ragged_cases() {
  // (M, N, K): ones, primes, one short of / one past the 8x48 tile, several k-blocks (fp32 256 and
  // bf16 512 per block) and several n-blocks (about 512 KiB of packed B each), N > M and N < M.
  const int64_t shapes[][3] = {{1, 1, 1},     {1, 47, 3},    {7, 5, 13},      {13, 97, 31},  {8, 48, 16},
                               {9, 49, 17},   {97, 53, 1},   {31, 49, 257},   {130, 288, 96}, {3, 1000, 600},
                               {61, 1009, 1031}, {257, 7, 541}, {2, 300, 2},  {300, 2, 2}};
  std::vector<Case> cases;
  int i = 0;
  for (const auto& s : shapes)
    for (int form = 0; form < 4; ++form, ++i)
      cases.push_back(Case{.trans_a = form == 2 || form == 3, .trans_b = form == 0 || form == 3, .M = s[0],
                           .N = s[1], .K = s[2], .bias = i % 3 == 0, .accumulate = i % 2 == 0,
                           .pad = i % 5 == 0 ? 3 : 0});
  return cases;
}

void check_all(bool bf16) {
  if (!cpu::gemm_avx512_supported(bf16)) GTEST_SKIP() << "CPU lacks AVX-512" << (bf16 ? " BF16" : "");
  const int threads = omp_get_max_threads();
  double worst = 0;
  for (int t : {1, 2}) {
    omp_set_num_threads(t);
    uint32_t seed = 10;
    for (const Case& c : ragged_cases()) worst = std::max(worst, check_case(c, bf16, seed += 4));
  }
  omp_set_num_threads(threads);
  std::printf("worst error / bound: %.3g\n", worst);
}

TEST(Gemm, Fp32AllFormsRagged) { check_all(false); }
TEST(Gemm, Bf16AllFormsRagged) { check_all(true); }

// Ours on AMX tiles against the reference, A fp32 (rounded while packing) or given in bf16, plain
// or transposed, B packed into pack_b.h's layout from either stored form; ragged shapes, bias,
// accumulation, padded strides, 1 and 2 threads, and shapes past one C block (256 x 128) and one
// K pass (256) so every blocking edge runs.
TEST(Gemm, AmxAllFormsRagged) {
  if (!cpu::cpu_features().amx_usable()) GTEST_SKIP() << "AMX-BF16 not usable on this CPU";
  auto cases = ragged_cases();
  for (const auto& s : {std::array<int64_t, 3>{300, 200, 600}, {513, 129, 257}, {64, 2100, 40}})
    for (int form = 0; form < 4; ++form)
      cases.push_back(Case{.trans_a = form >= 2, .trans_b = form % 2 == 1, .M = s[0], .N = s[1], .K = s[2],
                           .bias = form == 1, .accumulate = form != 1, .pad = form == 3 ? 5 : 0});
  const int threads = omp_get_max_threads();
  double worst = 0;
  for (bool a_in_bf16 : {false, true})
    for (int t : {1, 2}) {
      omp_set_num_threads(t);
      uint32_t seed = 30;
      for (const Case& c : cases) {
        auto run = [&](const GemmArgs& g) {
          // B (K, N) dense, from either stored form, into the blocked layout
          std::vector<float> b(size_t(g.K * g.N));
          for (int64_t k = 0; k < g.K; ++k)
            for (int64_t n = 0; n < g.N; ++n) b[size_t(k * g.N + n)] = g.trans_b ? g.B[n * g.ldb + k] : g.B[k * g.ldb + n];
          AlignedVector<uint16_t> packed(size_t(cpu::BlockedB{g.K, g.N}.size()));  // 64-byte stores
          cpu::pack_b_bf16(b.data(), g.K, g.N, false, packed.data());
          const int64_t a_elems = (g.trans_a ? g.K : g.M) * g.lda;
          std::vector<uint16_t> a16(static_cast<size_t>(a_elems));
          convert_f32_to_bf16(g.A, a16.data(), size_t(a_elems));
          cpu::gemm_amx(g, a_in_bf16 ? a16.data() : nullptr, packed.data());
        };
        worst = std::max(worst, check_case(c, true, seed += 4, run));
      }
    }
  omp_set_num_threads(threads);
  std::printf("worst error / bound: %.3g\n", worst);
}

// One product per element (K = 1): bf16 products are exact in fp32, so ours must equal the
// reference bit for bit, which pins the operand rounding to f32_to_bf16 (ties to even, values just
// above and below ties, wide exponents). Denormals are left out: vdpbf16ps flushes them.
TEST(Gemm, Bf16RoundingMatchesConversion) {
  if (!cpu::gemm_avx512_supported(true)) GTEST_SKIP() << "CPU lacks AVX-512 BF16";
  std::vector<float> a, b;
  const float u = std::ldexp(1.0f, -8);
  for (float base : {1.0f, -1.5f, 3.0f, 1e-15f, 7e18f})
    for (float off : {u, 3 * u, u * 1.0001f, u * 0.9999f, 5 * u, 2 * u, 0.0f}) {
      a.push_back(base * (1 + off));
      b.push_back(base * (1 - off / 2));
    }
  auto r = randn(200, 99);
  for (size_t i = 0; i < r.size(); i += 2) a.push_back(r[i]), b.push_back(r[i + 1] * 1e3f);
  const int64_t M = int64_t(a.size()), N = int64_t(b.size());
  std::vector<float> got(size_t(M * N)), want(size_t(M * N));
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {  // K = 1: every layout reads the same vectors
      GemmArgs g{.trans_a = ta, .trans_b = tb, .M = M, .N = N, .K = 1, .A = a.data(), .lda = ta ? M : 1,
                 .B = b.data(), .ldb = tb ? 1 : N, .C = got.data(), .ldc = N};
      cpu::gemm_bf16_avx512(g);
      g.C = want.data();
      cpu::ref::gemm(g, true);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i], want[i]) << "element " << i << " (ta " << ta << ", tb " << tb << ")";
    }
}

// CpuBackend's linear layers agree on both routes (SFT_GEMM=onednn and the default: AMX, ours, or
// fp32 FMA on bf16-rounded operands, gemm_route.h), on a model-like shape with bias and accumulation and on an LM-head-like one;
// each route says truly whether it keeps bf16 weight copies.
TEST(Gemm, BackendRoutesAgree) {
  const int64_t shapes[][3] = {{70, 96, 136}, {20, 40, 16400}};  // N, IC, OC
  for (const auto& sh : shapes) {
    const int64_t N = sh[0], IC = sh[1], OC = sh[2];
    auto x = randn(size_t(N * IC), 1), w = randn(size_t(OC * IC), 2), b = randn(size_t(OC), 3);
    auto dout = randn(size_t(N * OC), 4);
    const auto init = randn(size_t(N * OC), 5);
    for (DType dt : {DType::f32, DType::bf16}) {
      std::vector<float> out[2], dx[2], dw[2];
      const char* routes[2] = {"onednn", nullptr};
      for (int r = 0; r < 2; ++r) {
        if (routes[r]) setenv("SFT_GEMM", routes[r], 1);
        auto be = create_backend("cpu");
        const cpu::GemmRoute bf16_route = cpu::gemm_routes().bf16.route;
        unsetenv("SFT_GEMM");
        // Only the oneDNN bf16 routes and our AMX route hold bf16 weight copies, in two packed forms (4 bytes per
        // parameter; sft train's memory plan counts them).
        EXPECT_EQ(be->bf16_weight_copy_bytes(),
                  bf16_route == cpu::GemmRoute::amx || bf16_route == cpu::GemmRoute::onednn_bf16 ||
                          bf16_route == cpu::GemmRoute::ours_amx ? 4 : 0);
        be->set_matmul_dtype(dt);
        be->begin_pass();
        out[r] = init;
        dx[r] = randn(size_t(N * IC), 7);
        dw[r] = randn(size_t(OC * IC), 6);
        const Tensor tx(x.data(), DType::f32, {N, IC}), tw(w.data(), DType::f32, {OC, IC});
        const Tensor tb(b.data(), DType::f32, {OC}), tdout(dout.data(), DType::f32, {N, OC});
        be->linear_forward(Tensor(out[r].data(), DType::f32, {N, OC}), tx, tw, tb, true);
        be->linear_backward(Tensor(dx[r].data(), DType::f32, {N, IC}),
                            Tensor(dw[r].data(), DType::f32, {OC, IC}), Tensor(), tdout, tx, tw, true);
      }
      // Different fp32 summation orders over up to OC terms: relative to the largest |value|.
      auto near = [&](const std::vector<float>* v, const char* what) {
        for (int r = 1; r < 2; ++r) {
          double m = 0, d = 0;
          for (size_t i = 0; i < v[0].size(); ++i) {
            m = std::max(m, double(std::fabs(v[0][i])));
            d = std::max(d, double(std::fabs(v[r][i] - v[0][i])));
          }
          EXPECT_LE(d, 1e-5 * m) << what << " route " << (routes[r] ? routes[r] : "default") << " OC " << OC;
        }
      };
      near(out, "forward");
      near(dx, "dx");
      near(dw, "dw");
    }
  }
}

// ---- benchmark: GFLOP/s of ours and oneDNN: fp32; bf16 with oneDNN's operands pre-rounded, and
// with the rounding that CpuBackend's oneDNN path does per call ----

double best_seconds(int reps, const std::function<void()>& f) {
  f();  // warm: primitive creation, scratch
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

TEST(GemmBench, DISABLED_ModelShapes) {
  const int reps = std::getenv("SFT_BENCH_REPS") ? std::atoi(std::getenv("SFT_BENCH_REPS")) : 5;
  struct Preset {
    const char* name;
    int64_t C, FF;
  };
  const Preset presets[] = {{"tiny", 288, 768}, {"small", 512, 1376}, {"base", 768, 2048}};
  std::printf("GFLOP/s, %d threads. f32: ours, oneDNN, ratio | bf16: ours, oneDNN (operands pre-rounded),\n"
              "ratio, oneDNN + per-call rounding of the activation operand (CpuBackend's path), ratio\n",
              omp_get_max_threads());
  std::printf("%-6s %-7s %-4s %5s %6s %6s | %5s %5s %6s | %5s %5s %6s %5s %6s\n", "preset", "layer",
              "form", "M", "N", "K", "ours", "dnn", "ratio", "ours", "dnn", "ratio", "dnn+r", "ratio");
  for (const Preset& p : presets) {
    const struct {
      const char* name;
      int64_t OC, IC, tokens;
    } layers[] = {{"qkv", 3 * p.C, p.C, 2048}, {"o", p.C, p.C, 2048}, {"gate_up", 2 * p.FF, p.C, 2048},
                  {"down", p.C, p.FF, 2048},   {"head", 32000, p.C, 1024}};
    for (const auto& l : layers) {
      const auto x = randn(size_t(l.tokens * l.IC), 1), w = randn(size_t(l.OC * l.IC), 2);
      const auto d = randn(size_t(l.tokens * l.OC), 3);
      std::vector<float> c(size_t(std::max({l.tokens * l.OC, l.tokens * l.IC, l.OC * l.IC})));
      const int64_t T = l.tokens, OC = l.OC, IC = l.IC;
      const GemmArgs forms[3] = {  // out = x·wᵀ, dx = dout·w, dw += doutᵀ·x
          {.trans_a = false, .trans_b = true, .M = T, .N = OC, .K = IC, .A = x.data(), .lda = IC,
           .B = w.data(), .ldb = IC, .C = c.data(), .ldc = OC},
          {.trans_a = false, .trans_b = false, .M = T, .N = IC, .K = OC, .A = d.data(), .lda = OC,
           .B = w.data(), .ldb = IC, .C = c.data(), .ldc = IC},
          {.trans_a = true, .trans_b = false, .M = OC, .N = IC, .K = T, .A = d.data(), .lda = OC,
           .B = x.data(), .ldb = IC, .C = c.data(), .ldc = IC, .accumulate = true}};
      const char* form_names[3] = {"fwd", "dx", "dw"};
      for (int f = 0; f < 3; ++f) {
        const GemmArgs& g = forms[f];
        const double gf = 2.0 * double(g.M) * double(g.N) * double(g.K) * 1e-9;
        std::vector<uint16_t> a16(size_t(g.M * g.K)), b16(size_t(g.K * g.N));
        convert_f32_to_bf16(g.A, a16.data(), a16.size());
        convert_f32_to_bf16(g.B, b16.data(), b16.size());
        // oneDNN as CpuBackend runs it in bf16: the activation operand rounded per call (weights
        // are rounded once per pass; dout's copy is shared by dx and dw, so dw rounds only x).
        std::vector<uint16_t> act16(std::max(a16.size(), b16.size()));
        const std::function<void()> runs[5] = {
            [&] { cpu::gemm_f32_avx512(g); },
            [&] { cpu::gemm_onednn(g, false); },
            [&] { cpu::gemm_bf16_avx512(g); },
            [&] { cpu::gemm_onednn_bf16(g, a16.data(), b16.data()); },
            [&] {
              if (f == 2) {
                convert_f32_to_bf16(g.B, act16.data(), b16.size());
                cpu::gemm_onednn_bf16(g, a16.data(), act16.data());
              } else {
                convert_f32_to_bf16(g.A, act16.data(), a16.size());
                cpu::gemm_onednn_bf16(g, act16.data(), b16.data());
              }
            }};
        double best[5] = {};  // GFLOP/s, best over rounds that alternate the five (A/B back to back)
        for (int round = 0; round < 3; ++round)
          for (int r = 0; r < 5; ++r) best[r] = std::max(best[r], gf / best_seconds(reps, runs[r]));
        std::printf("%-6s %-7s %-4s %5lld %6lld %6lld", p.name, l.name, form_names[f], (long long)g.M,
                    (long long)g.N, (long long)g.K);
        std::printf(" | %5.0f %5.0f %5.2fx | %5.0f %5.0f %5.2fx %5.0f %5.2fx\n", best[0], best[1],
                    best[0] / best[1], best[2], best[3], best[2] / best[3], best[4], best[2] / best[4]);
        std::fflush(stdout);
      }
    }
  }
}

// CpuBackend's linear layers on the route chosen for this CPU (bf16: AMX where usable), as the
// model calls them: forward, and backward (dx and dw) counted together; includes the per-call
// bf16 rounding of activations; weights are packed once (copies kept: the contract is used).
TEST(GemmBench, DISABLED_BackendLinear) {
  const int reps = std::getenv("SFT_BENCH_REPS") ? std::atoi(std::getenv("SFT_BENCH_REPS")) : 5;
  struct Preset {
    const char* name;
    int64_t C, FF;
  };
  const Preset presets[] = {{"tiny", 288, 768}, {"small", 512, 1376}, {"base", 768, 2048}};
  auto be = create_backend("cpu");
  be->invalidate_weight_copies(nullptr, 0);
  std::printf("%s\nGFLOP/s, %d threads, N = 2048 tokens: bf16 forward, backward (dx + dw) | fp32 forward, backward\n",
              be->route_report().c_str(), omp_get_max_threads());
  for (const Preset& p : presets) {
    const struct {
      const char* name;
      int64_t OC, IC;
    } layers[] = {{"qkv", 3 * p.C, p.C}, {"o", p.C, p.C}, {"gate_up", 2 * p.FF, p.C}, {"down", p.C, p.FF},
                  {"head", 32000, p.C}};
    for (const auto& l : layers) {
      const int64_t T = 2048, OC = l.OC, IC = l.IC;
      auto x = randn(size_t(T * IC), 1), w = randn(size_t(OC * IC), 2), d = randn(size_t(T * OC), 3);
      std::vector<float> out(size_t(T * OC)), dx(size_t(T * IC)), dw(size_t(OC * IC));
      const Tensor tx(x.data(), DType::f32, {T, IC}), tw(w.data(), DType::f32, {OC, IC});
      const Tensor tout(out.data(), DType::f32, {T, OC}), td(d.data(), DType::f32, {T, OC});
      const Tensor tdx(dx.data(), DType::f32, {T, IC}), tdw(dw.data(), DType::f32, {OC, IC});
      const double gf = 2.0 * double(T) * double(OC) * double(IC) * 1e-9;
      std::printf("%-6s %-7s %6lld x %5lld:", p.name, l.name, (long long)OC, (long long)IC);
      for (DType dt : {DType::bf16, DType::f32}) {
        be->set_matmul_dtype(dt);
        double fwd = 0, bwd = 0;
        for (int round = 0; round < 3; ++round) {
          fwd = std::max(fwd, gf / best_seconds(reps, [&] { be->linear_forward(tout, tx, tw, Tensor(), false); }));
          bwd = std::max(bwd, 2 * gf / best_seconds(reps, [&] {
                           be->linear_backward(tdx, tdw, Tensor(), td, tx, tw, false);
                         }));
        }
        std::printf(" %6.0f %6.0f %s", fwd, bwd, dt == DType::bf16 ? "|" : "\n");
      }
      std::fflush(stdout);
    }
  }
}

}  // namespace
}  // namespace sft
