// The bf16 AMX FlashAttention (attention_amx.cpp) against the plain double reference
// (reference.cpp): out, lse and the backward's dq/dk/dv over GQA, HS 32/64/96/128 and packed
// sequences of odd lengths; packing, determinism and the CpuBackend routing (fp32 runs stay on
// the fp32 kernel bit for bit). Skips visibly on CPUs without usable AMX-BF16 tiles. A timing
// run (AttentionAmxBench, disabled by default) prints fp32 vs AMX on the base preset's shapes.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <tuple>
#include <vector>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/kernels.h"
#include "ops_test_util.h"

namespace sft {
namespace {

using test::randn;

// Tolerances. Each tile product rounds both operands to bf16 (unit roundoff u = 2^-9) and
// accumulates in fp32, so one product's error is at most 2u relative to Σ|terms|. dq/dk/dv come
// out of a chain of at most three such products (S = Q·Kᵀ → P, dP = dO·Vᵀ → dS, dS·K / dSᵀ·Q /
// Pᵀ·dO), so their first-order error is ≤ 6u of the term magnitudes; with random-signed rounding
// errors the tensor-wide RMS stays near 2u·√3 ≈ 3.5u of the result's RMS. Bounds: RMS error ≤ 8u
// of RMS(ref), max error ≤ 32u of max|ref| (cancellation leaves single elements smaller than
// their terms). lse = log Σ exp(s): |Δlse| ≤ max |Δs| ≤ 2u·scale·Σ_d|q_d k_d|, ~ 2u·0.8·√HS
// for N(0,1) inputs; the test allows 2u·√HS absolute.
constexpr double kU = 1.0 / 512;
constexpr double kRmsTol = 8 * kU, kMaxTol = 32 * kU;

struct Result {
  std::vector<float> out, lse, dqkv;
};

using Fwd = void (*)(float*, float*, const float*, const SeqLayout&, int, int, int);
using Bwd = void (*)(float*, const float*, const float*, const float*, const float*,
                     const SeqLayout&, int, int, int);

Result run(Fwd fwd, Bwd bwd, const std::vector<int32_t>& lens, const float* qkv, const float* dout,
           int NH, int NKV, int HS) {
  std::vector<int32_t> cu = {0};
  for (int32_t l : lens) cu.push_back(cu.back() + l);
  const SeqLayout seqs{cu.data(), int(lens.size()), *std::max_element(lens.begin(), lens.end())};
  const int64_t N = cu.back(), QKV = int64_t(NH + 2 * NKV) * HS;
  Result r{std::vector<float>(size_t(N * NH * HS)), std::vector<float>(size_t(N * NH)),
           std::vector<float>(size_t(N * QKV), NAN)};
  fwd(r.out.data(), r.lse.data(), qkv, seqs, NH, NKV, HS);
  bwd(r.dqkv.data(), dout, qkv, r.out.data(), r.lse.data(), seqs, NH, NKV, HS);
  return r;
}
Result run_amx(const std::vector<int32_t>& lens, const float* qkv, const float* dout, int NH,
               int NKV, int HS) {
  return run(cpu::attention_forward_amx, cpu::attention_backward_amx, lens, qkv, dout, NH, NKV, HS);
}

// Relative RMS and max errors of a strided part of two (rows, stride) tensors: columns [c0, c1).
struct Err {
  double rms, max;
};
Err rel_err(const std::vector<float>& got, const std::vector<float>& ref, int64_t stride, int64_t c0,
            int64_t c1) {
  double se = 0, sr = 0, me = 0, mr = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const int64_t col = int64_t(i) % stride;
    if (col < c0 || col >= c1) continue;
    const double d = std::abs(double(got[i]) - ref[i]);
    se += d * d, sr += double(ref[i]) * ref[i];
    me = std::max(me, std::isnan(d) ? INFINITY : d), mr = std::max(mr, std::abs(double(ref[i])));
  }
  return {std::sqrt(se / sr), me / mr};
}

bool have_amx() { return cpu::cpu_features().amx_usable(); }
#define SKIP_WITHOUT_AMX()                                                                        \
  if (!have_amx())                                                                                \
  GTEST_SKIP() << "no usable AMX-BF16 tiles on this CPU (" << cpu::cpu_features().model_name      \
               << (cpu::cpu_features().amx_refusal.empty() ? "" : "; ")                            \
               << cpu::cpu_features().amx_refusal << "): the bf16 AMX attention is not run"

TEST(AttentionAmx, MatchesReferenceWithinBf16Tolerance) {
  SKIP_WITHOUT_AMX();
  const std::vector<int32_t> lens = {1, 17, 64, 200, 129, 65};
  for (auto [NH, NKV, HS] : {std::tuple{4, 2, 64}, {2, 2, 128}, {6, 2, 32}, {3, 1, 96}, {4, 4, 64}}) {
    const int64_t QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS;
    int64_t N = 0;
    for (int32_t l : lens) N += l;
    const auto qkv = randn(size_t(N * QKV), 11), dout = randn(size_t(N * OC), 12);
    const Result got = run_amx(lens, qkv.data(), dout.data(), NH, NKV, HS);
    const Result ref = run(cpu::ref::attention_forward, cpu::ref::attention_backward, lens, qkv.data(),
                           dout.data(), NH, NKV, HS);
    const std::string what = "NH=" + std::to_string(NH) + " NKV=" + std::to_string(NKV) +
                             " HS=" + std::to_string(HS);
    const std::tuple<const char*, const std::vector<float>*, const std::vector<float>*, int64_t,
                     int64_t, int64_t>
        parts[] = {{"out", &got.out, &ref.out, OC, 0, OC},
                   {"dq", &got.dqkv, &ref.dqkv, QKV, 0, OC},
                   {"dk", &got.dqkv, &ref.dqkv, QKV, OC, OC + NKV * HS},
                   {"dv", &got.dqkv, &ref.dqkv, QKV, OC + NKV * HS, QKV}};
    for (const auto& [name, g, r, stride, c0, c1] : parts) {
      const Err e = rel_err(*g, *r, stride, c0, c1);
      std::printf("  %s %-3s rel RMS %.2e (%.1fu)  rel max %.2e (%.1fu)\n", what.c_str(), name,
                  e.rms, e.rms / kU, e.max, e.max / kU);
      EXPECT_LE(e.rms, kRmsTol) << what << " " << name;
      EXPECT_LE(e.max, kMaxTol) << what << " " << name;
    }
    double lse_max = 0;
    for (size_t i = 0; i < got.lse.size(); ++i)
      lse_max = std::max(lse_max, std::abs(double(got.lse[i]) - ref.lse[i]));
    std::printf("  %s lse max abs %.2e (bound %.2e)\n", what.c_str(), lse_max, 2 * kU * std::sqrt(HS));
    EXPECT_LE(lse_max, 2 * kU * std::sqrt(double(HS))) << what << " lse";
  }
}

// Packed sequences give bit for bit what each sequence gives alone; two runs and other thread
// counts give the same bits.
TEST(AttentionAmx, PackedEqualsSeparateAndDeterministic) {
  SKIP_WITHOUT_AMX();
  const std::vector<int32_t> lens = {150, 1, 77, 64, 129};
  const int NH = 4, NKV = 2, HS = 64;
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS, N = 421;
  const auto qkv = randn(size_t(N * QKV), 1), dout = randn(size_t(N * OC), 2);
  const Result packed = run_amx(lens, qkv.data(), dout.data(), NH, NKV, HS);
  int64_t s0 = 0;
  for (int32_t T : lens) {
    const Result alone = run_amx({T}, qkv.data() + s0 * QKV, dout.data() + s0 * OC, NH, NKV, HS);
    EXPECT_EQ(0, std::memcmp(alone.out.data(), packed.out.data() + s0 * OC, alone.out.size() * 4)) << T;
    EXPECT_EQ(0, std::memcmp(alone.lse.data(), packed.lse.data() + s0 * NH, alone.lse.size() * 4)) << T;
    EXPECT_EQ(0, std::memcmp(alone.dqkv.data(), packed.dqkv.data() + s0 * QKV, alone.dqkv.size() * 4)) << T;
    s0 += T;
  }
  const Result again = run_amx(lens, qkv.data(), dout.data(), NH, NKV, HS);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(threads == 1 ? 3 : 1);
  const Result other = run_amx(lens, qkv.data(), dout.data(), NH, NKV, HS);
  omp_set_num_threads(threads);
  for (const Result* r : {&again, &other}) {
    EXPECT_EQ(r->out, packed.out);
    EXPECT_EQ(r->lse, packed.lse);
    EXPECT_EQ(r->dqkv, packed.dqkv);
  }
}

// CpuBackend: fp32 runs take the fp32 kernel (bit-identical), bf16 runs the AMX one where usable;
// HS not a multiple of 32 and SFT_ATTENTION=fp32 fall back to fp32.
TEST(AttentionAmx, BackendRouting) {
  EXPECT_FALSE(cpu::attention_amx_usable(48));
  setenv("SFT_ATTENTION", "fp32", 1);
  EXPECT_FALSE(cpu::attention_amx_usable(64));
  unsetenv("SFT_ATTENTION");
  EXPECT_EQ(cpu::attention_amx_usable(64), have_amx());
  const std::vector<int32_t> cu = {0, 70, 100};
  const SeqLayout seqs{cu.data(), 2, 70};
  const int NH = 2, NKV = 1, HS = 64;
  const int64_t N = 100, QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS;
  auto qkv = randn(size_t(N * QKV), 5), dout = randn(size_t(N * OC), 6);
  auto be = create_backend("cpu");
  const auto t = [](std::vector<float>& v, std::initializer_list<int64_t> d) {
    return Tensor(v.data(), DType::f32, d);
  };
  for (DType dt : {DType::f32, DType::bf16}) {
    be->set_matmul_dtype(dt);
    std::vector<float> out(size_t(N * OC)), lse(size_t(N * NH)), dqkv(size_t(N * QKV));
    be->attention_forward(t(out, {N, OC}), t(lse, {N, NH}), t(qkv, {N, QKV}), seqs, NH, NKV, HS);
    be->attention_backward(t(dqkv, {N, QKV}), t(dout, {N, OC}), t(qkv, {N, QKV}), t(out, {N, OC}),
                           t(lse, {N, NH}), seqs, NH, NKV, HS);
    const bool amx = dt == DType::bf16 && have_amx();
    const Result want = run(amx ? cpu::attention_forward_amx : cpu::attention_forward,
                            amx ? cpu::attention_backward_amx : cpu::attention_backward,
                            {70, 30}, qkv.data(), dout.data(), NH, NKV, HS);
    EXPECT_EQ(out, want.out) << dtype_name(dt);
    EXPECT_EQ(lse, want.lse) << dtype_name(dt);
    EXPECT_EQ(dqkv, want.dqkv) << dtype_name(dt);
  }
}

// Forward + backward wall time, best of 5, fp32 kernel vs AMX, on the base preset's attention
// (2 sequences of 1024, NH = NKV = 12, HS = 64) and a GQA shape.
void bench(const std::vector<int32_t>& lens, int NH, int NKV, int HS) {
  int64_t N = 0;
  for (int32_t T : lens) N += T;
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
  const auto qkv = randn(size_t(N * QKV), 1), dout = randn(size_t(N * NH * HS), 2);
  std::vector<int32_t> cu = {0};
  for (int32_t l : lens) cu.push_back(cu.back() + l);
  const SeqLayout seqs{cu.data(), int(lens.size()), *std::max_element(lens.begin(), lens.end())};
  std::vector<float> out(size_t(N * NH * HS)), lse(size_t(N * NH)), dqkv(size_t(N * QKV));
  for (bool amx : {false, true}) {
    using clock = std::chrono::steady_clock;
    double tf = 1e9, tb = 1e9, cf = 1e9, cb = 1e9;  // wall, and CPU seconds of all threads
    for (int it = 0; it < 5; ++it) {
      const std::clock_t c0 = std::clock();
      auto t0 = clock::now();
      (amx ? cpu::attention_forward_amx : cpu::attention_forward)(out.data(), lse.data(), qkv.data(),
                                                                  seqs, NH, NKV, HS);
      auto t1 = clock::now();
      const std::clock_t c1 = std::clock();
      (amx ? cpu::attention_backward_amx : cpu::attention_backward)(
          dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), seqs, NH, NKV, HS);
      auto t2 = clock::now();
      const std::clock_t c2 = std::clock();
      cf = std::min(cf, double(c1 - c0) / CLOCKS_PER_SEC);
      cb = std::min(cb, double(c2 - c1) / CLOCKS_PER_SEC);
      tf = std::min(tf, std::chrono::duration<double>(t1 - t0).count());
      tb = std::min(tb, std::chrono::duration<double>(t2 - t1).count());
    }
    std::printf("%s: attention %s N=%lld S=%zu NH=%d NKV=%d HS=%d threads=%d: fwd %.2f ms, bwd %.2f "
                "ms, fwd+bwd %.2f ms (CPU time fwd %.2f ms, bwd %.2f ms)\n",
                cpu::cpu_features().model_name.c_str(), amx ? "bf16 AMX" : "fp32    ", (long long)N,
                lens.size(), NH, NKV, HS, omp_get_max_threads(), tf * 1e3, tb * 1e3, (tf + tb) * 1e3, cf * 1e3, cb * 1e3);
  }
}

TEST(AttentionAmxBench, DISABLED_Speed) {
  SKIP_WITHOUT_AMX();
  bench({1024, 1024}, 12, 12, 64);
  bench({2048}, 32, 4, 64);
  bench({512, 512}, 8, 8, 128);
}

}  // namespace
}  // namespace sft
