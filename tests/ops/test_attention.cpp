// Attention-specific properties of the fast FlashAttention kernels (attention.cpp): packed
// sequences give exactly the results of running each sequence alone (no attention across
// boundaries, positions of K/V tiles relative to each sequence), results are bit-identical run to
// run and across thread counts, and a timing run (AttentionBench, disabled by default: run with
// --gtest_also_run_disabled_tests) that prints GFLOP/s of forward + backward.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/kernels.h"
#include "ops_test_util.h"

namespace sft {
namespace {

using test::randn;

struct Result {
  std::vector<float> out, lse, dqkv;
};

// Forward and backward of the fast kernels on qkv (N, QKV) / dout (N, NH*HS) for sequence lengths.
Result run(const std::vector<int32_t>& lens, const float* qkv, const float* dout, int NH, int NKV,
           int HS) {
  std::vector<int32_t> cu = {0};
  for (int32_t l : lens) cu.push_back(cu.back() + l);
  const SeqLayout seqs{cu.data(), int(lens.size()), *std::max_element(lens.begin(), lens.end())};
  const int64_t N = cu.back(), QKV = int64_t(NH + 2 * NKV) * HS;
  Result r{std::vector<float>(size_t(N * NH * HS)), std::vector<float>(size_t(N * NH)),
           std::vector<float>(size_t(N * QKV))};
  cpu::attention_forward(r.out.data(), r.lse.data(), qkv, seqs, NH, NKV, HS);
  cpu::attention_backward(r.dqkv.data(), dout, qkv, r.out.data(), r.lse.data(), seqs, NH, NKV, HS);
  return r;
}

bool same_bits(const std::vector<float>& a, const float* b) {
  return std::memcmp(a.data(), b, a.size() * sizeof(float)) == 0;
}

class Packing : public ::testing::TestWithParam<bool> {  // param: generic path
 protected:
  void SetUp() override {
    if (GetParam()) setenv("SFT_CPU_ISA", "generic", 1);
  }
  void TearDown() override { unsetenv("SFT_CPU_ISA"); }
};
INSTANTIATE_TEST_SUITE_P(Attention, Packing, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "generic" : "native"; });

TEST_P(Packing, PackedEqualsSeparate) {
  const std::vector<int32_t> lens = {150, 1, 77, 64, 129};
  for (auto [NH, NKV, HS] : {std::tuple{4, 2, 64}, {6, 6, 48}, {2, 1, 128}, {2, 2, 24}}) {
    const int64_t QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS;
    int64_t N = 0;
    for (int32_t l : lens) N += l;
    const auto qkv = randn(size_t(N * QKV), 1), dout = randn(size_t(N * OC), 2);
    const Result packed = run(lens, qkv.data(), dout.data(), NH, NKV, HS);
    int64_t s0 = 0;
    for (int32_t T : lens) {
      const Result alone = run({T}, qkv.data() + s0 * QKV, dout.data() + s0 * OC, NH, NKV, HS);
      EXPECT_TRUE(same_bits(alone.out, packed.out.data() + s0 * OC)) << "out, T=" << T << " HS=" << HS;
      EXPECT_TRUE(same_bits(alone.lse, packed.lse.data() + s0 * NH)) << "lse, T=" << T << " HS=" << HS;
      EXPECT_TRUE(same_bits(alone.dqkv, packed.dqkv.data() + s0 * QKV)) << "dqkv, T=" << T << " HS=" << HS;
      s0 += T;
    }
  }
}

TEST_P(Packing, DeterministicAcrossRunsAndThreads) {
  const std::vector<int32_t> lens = {300, 1, 45, 200};
  const int NH = 4, NKV = 2, HS = 64;
  const int64_t N = 546, QKV = int64_t(NH + 2 * NKV) * HS;
  const auto qkv = randn(size_t(N * QKV), 3), dout = randn(size_t(N * NH * HS), 4);
  const Result a = run(lens, qkv.data(), dout.data(), NH, NKV, HS);
  const Result b = run(lens, qkv.data(), dout.data(), NH, NKV, HS);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(threads == 1 ? 3 : 1);
  const Result c = run(lens, qkv.data(), dout.data(), NH, NKV, HS);
  omp_set_num_threads(threads);
  for (const Result* r : {&b, &c}) {
    EXPECT_TRUE(same_bits(a.out, r->out.data()));
    EXPECT_TRUE(same_bits(a.lse, r->lse.data()));
    EXPECT_TRUE(same_bits(a.dqkv, r->dqkv.data()));
  }
}

// Causal FLOPs (FlashAttention convention): forward 2 GEMMs of T²/2·HS per head, backward 5.
void bench(const std::vector<int32_t>& lens, int NH, int NKV, int HS) {
  int64_t N = 0;
  double flops_fwd = 0;
  for (int32_t T : lens) {
    N += T;
    flops_fwd += 2.0 * 2.0 * double(T) * T / 2 * HS * NH;
  }
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
  const auto qkv = randn(size_t(N * QKV), 1), dout = randn(size_t(N * NH * HS), 2);
  std::vector<int32_t> cu = {0};
  for (int32_t l : lens) cu.push_back(cu.back() + l);
  const SeqLayout seqs{cu.data(), int(lens.size()), *std::max_element(lens.begin(), lens.end())};
  std::vector<float> out(size_t(N * NH * HS)), lse(size_t(N * NH)), dqkv(size_t(N * QKV));
  // Best of 5 wall times; CPU time (all threads, incl. OpenMP spin-waits) is printed as well
  // because on a shared machine it is the steadier measure of the kernel itself.
  using clock = std::chrono::steady_clock;
  double tf = 1e9, tb = 1e9, cf = 1e9, cb = 1e9;
  for (int it = 0; it < 5; ++it) {
    const std::clock_t c0 = std::clock();
    auto t0 = clock::now();
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), seqs, NH, NKV, HS);
    const std::clock_t c1 = std::clock();
    auto t1 = clock::now();
    cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), seqs, NH, NKV, HS);
    const std::clock_t c2 = std::clock();
    auto t2 = clock::now();
    tf = std::min(tf, std::chrono::duration<double>(t1 - t0).count());
    tb = std::min(tb, std::chrono::duration<double>(t2 - t1).count());
    cf = std::min(cf, double(c1 - c0) / CLOCKS_PER_SEC);
    cb = std::min(cb, double(c2 - c1) / CLOCKS_PER_SEC);
  }
  const int threads = omp_get_max_threads();
  std::printf("attention N=%lld S=%zu NH=%d NKV=%d HS=%d threads=%d: fwd %.2f ms %.1f GFLOP/s, "
              "bwd %.2f ms %.1f GFLOP/s, fwd+bwd %.1f GFLOP/s (per CPU-second x threads: fwd %.1f "
              "bwd %.1f)\n",
              (long long)N, lens.size(), NH, NKV, HS, threads, tf * 1e3, flops_fwd / tf * 1e-9,
              tb * 1e3, 2.5 * flops_fwd / tb * 1e-9, 3.5 * flops_fwd / (tf + tb) * 1e-9,
              flops_fwd / cf * threads * 1e-9, 2.5 * flops_fwd / cb * threads * 1e-9);
}

TEST(AttentionBench, DISABLED_Speed) {
  bench({1024}, 12, 12, 64);
  bench(std::vector<int32_t>(8, 256), 6, 6, 48);
  bench({2048}, 32, 4, 64);
  bench({512, 512, 512, 512}, 8, 8, 64);
}

}  // namespace
}  // namespace sft
