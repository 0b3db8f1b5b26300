// The AMX-BF16 dense peak for MFU, measured: every OpenMP thread configures 8 tiles (6 fp32
// accumulators C 16x16, A 16x32 bf16, B 16x32 bf16 pairs) and runs a tile-only loop of independent
// tdpbf16ps (16*16*32 = 8192 FMAs = 16384 FLOP each); no memory is touched inside the loop.
// Called only where cpu_features().amx_usable() (Linux granted tile state). Best of kTrials runs.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/gemm.h"

namespace sft::cpu {

namespace {

constexpr long kIters = 400'000;  // x 6 tdpbf16ps, ~16 cycles each: ~13 ms per thread at 3 GHz
constexpr int kTrials = 10;

struct alignas(64) TileConfig {
  uint8_t palette_id = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Seconds the slowest thread took for kIters x 6 tdpbf16ps.
double timed_run() {
  double worst_s = 0.0;
#pragma omp parallel reduction(max : worst_s)
  {
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
    alignas(64) uint16_t ones[16 * 32];
    for (auto& v : ones) v = 0x3c00;  // bf16 2^-7: sums stay finite and normal
    _tile_loadd(6, ones, 64);
    _tile_loadd(7, ones, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_zero(4);
    _tile_zero(5);
    auto run = [](long iters) {
      for (long it = 0; it < iters; ++it) {
        _tile_dpbf16ps(0, 6, 7);
        _tile_dpbf16ps(1, 6, 7);
        _tile_dpbf16ps(2, 6, 7);
        _tile_dpbf16ps(3, 6, 7);
        _tile_dpbf16ps(4, 6, 7);
        _tile_dpbf16ps(5, 6, 7);
      }
    };
    run(kIters / 4);  // let the clock (and the AMX power state) settle
#pragma omp barrier
    const auto t0 = std::chrono::steady_clock::now();
    run(kIters);
    worst_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    alignas(64) float c[16 * 16];
    _tile_stored(0, c, 64);  // the results are used: the loop cannot be dropped
    asm volatile("" : : "r"(c) : "memory");
    _tile_release();
  }
  return worst_s;
}

}  // namespace

double measure_peak_gflops_amx() {
  if (!cpu_features().amx_usable()) return 0.0;
  double best_s = 1e30;
  for (int t = 0; t < kTrials; ++t) best_s = std::min(best_s, timed_run());
  constexpr double flop_per_instr = 2.0 * 16 * 16 * 32;
  return double(omp_get_max_threads()) * kIters * 6 * flop_per_instr / std::max(best_s, 1e-9) / 1e9;
}

}  // namespace sft::cpu
