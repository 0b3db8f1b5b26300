// The CPU's dense peak for MFU, measured: every OpenMP thread runs a register-only loop of
// independent vfmadd231ps (fp32: 32 FLOP each) or vdpbf16ps (bf16: 64 FLOP each) on zmm registers,
// the instructions our GEMM micro-kernels issue. Cloud machines of one type differ (clock, core
// generation), so MFU is against what this machine delivers, not a datasheet number. Best of
// kTrials short runs: on a shared machine one run can lose its core for a moment.
#include <omp.h>

#include <algorithm>
#include <chrono>

#include "backend/cpu/gemm.h"
#include "backend/cpu/simd_avx512.h"

namespace sft::cpu {

namespace {

constexpr int kAcc = 16;              // independent chains: more than latency x ports on any core
constexpr long kIters = 8'000'000;    // ~35 ms per thread at one instruction per cycle, ~3.7 GHz
constexpr int kTrials = 10;

// Seconds the slowest thread took for kIters x kAcc instructions.
double timed_run(bool bf16) {
  double worst_s = 0.0;
  float sink = 0.0f;
#pragma omp parallel reduction(max : worst_s) reduction(+ : sink)
  {
    __m512 acc[kAcc];
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_set1_ps(float(i));
    __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-6f);
    __m512bh pa = (__m512bh)_mm512_set1_epi32(0x3f803f80), pb = pa;
    auto run = [&](long iters) {
      for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < kAcc; ++i)
          acc[i] = bf16 ? _mm512_dpbf16_ps(acc[i], pa, pb) : _mm512_fmadd_ps(a, acc[i], b);
        asm volatile("" : "+v"(a), "+v"(b), "+v"(pa), "+v"(pb));  // keep the operands opaque
      }
    };
    run(kIters / 8);  // let the clock settle
#pragma omp barrier
    const auto t0 = std::chrono::steady_clock::now();
    run(kIters);
    worst_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int i = 0; i < kAcc; ++i) sink += _mm512_reduce_add_ps(acc[i]);
  }
  asm volatile("" : : "x"(sink));
  return worst_s;
}

}  // namespace

double measure_peak_gflops_avx512(bool bf16) {
  double best_s = 1e30;
  for (int t = 0; t < kTrials; ++t) best_s = std::min(best_s, timed_run(bf16));
  const double flop_per_instr = bf16 ? 64.0 : 32.0;
  return double(omp_get_max_threads()) * kIters * kAcc * flop_per_instr / std::max(best_s, 1e-9) / 1e9;
}

}  // namespace sft::cpu
