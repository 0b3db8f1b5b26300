// create_backend(): the one place that maps a device name to a Backend implementation. The CUDA
// backend exists only in builds configured with nvcc (SFT_HAVE_CUDA, set by CMake for this file
// alone); otherwise asking for it is a clear error rather than a silent CPU fallback.
#include "backend/backend.h"

#include <fmt/format.h>
#include <omp.h>

#include "backend/cpu/backend_cpu.h"
#include "backend/cpu/gemm.h"
#include "backend/cpu/gemm_route.h"
#ifdef SFT_HAVE_CUDA
#include "backend/cuda/create.h"
#endif
#ifndef SFT_NO_CUDA_REASON
#define SFT_NO_CUDA_REASON "it was configured without one"
#endif

namespace sft {

std::unique_ptr<Backend> create_backend(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackend>();
#ifdef SFT_HAVE_CUDA
  if (name == "cuda") return create_cuda_backend();
#else
  if (name == "cuda")
    fail("backend", "--device cuda: this build has no CUDA backend ({}); install the CUDA toolkit and rebuild "
                    "(cmake -DSFT_CUDA=ON), or use --device cpu", SFT_NO_CUDA_REASON);
#endif
  fail("backend", "unknown device '{}', expected 'cpu' or 'cuda'", name);
}

namespace {

// Measured once per process (the first call's OpenMP thread count), by instruction.
struct MeasuredPeak {
  double gflops;
  std::string how;
};
const MeasuredPeak& fma_peak() {
  static const MeasuredPeak p{cpu::measure_peak_gflops_avx512(false),
                              fmt::format("fp32 FMA (vfmadd231ps zmm), measured: register-only loop on {} threads, "
                                          "best of 10", omp_get_max_threads())};
  return p;
}
const MeasuredPeak& dpbf16_peak() {
  static const MeasuredPeak p{cpu::measure_peak_gflops_avx512(true),
                              fmt::format("vdpbf16ps zmm, measured: register-only loop on {} threads, best of 10",
                                          omp_get_max_threads())};
  return p;
}
// AMX: measured tile-only tdpbf16ps loop; if that reads implausibly low (a busy machine) or fails,
// derived from the measured FMA peak by the per-core rates: tdpbf16ps 16x16x32 = 16384 FLOP per
// 16 cycles = 1024 FLOP/cycle against 2 x 32 = 64 FLOP/cycle of two zmm FMA ports: 16x.
const MeasuredPeak& amx_peak() {
  static const MeasuredPeak p = [] {
    const int threads = omp_get_max_threads();
    const double measured = cpu::measure_peak_gflops_amx();
    const double derived = 16.0 * fma_peak().gflops;
    if (measured >= 0.5 * derived)
      return MeasuredPeak{measured, fmt::format("AMX tdpbf16ps, measured: tile-only loop on {} threads, best of 10 "
                                                "(formula 16 x FMA peak: {:.0f})", threads, derived)};
    return MeasuredPeak{derived, fmt::format("AMX tdpbf16ps, derived: 1024 FLOP/cycle/core = 16 x the measured fp32 "
                                             "FMA peak {:.0f} (a tile-only loop measured {:.0f}: too low, machine busy?)",
                                             fma_peak().gflops, measured)};
  }();
  return p;
}

}  // namespace

PeakInfo default_peak(Device device, DType matmul_dtype, bool tf32) {
  const bool bf16 = matmul_dtype == DType::bf16;
  if (device == Device::cuda) {
    if (bf16) return {989000.0, "H100/H200 SXM dense bf16 tensor-core peak (datasheet)"};
    if (tf32) return {494500.0, "H100/H200 SXM dense TF32 tensor-core peak (datasheet)"};
    return {67000.0, "H100/H200 SXM fp32 peak (datasheet)"};
  }
  const cpu::GemmRoutes routes = cpu::gemm_routes();
  const cpu::GemmRoute route = bf16 ? routes.bf16.route : routes.fp32.route;
  const cpu::CpuFeatures& f = cpu::cpu_features();
  const MeasuredPeak* p = nullptr;
  switch (route) {
    case cpu::GemmRoute::amx: p = &amx_peak(); break;
    case cpu::GemmRoute::ours_bf16:
    case cpu::GemmRoute::onednn_bf16: p = &dpbf16_peak(); break;
    case cpu::GemmRoute::ours_fp32: p = &fma_peak(); break;
    case cpu::GemmRoute::onednn_fp32: p = f.avx512 ? &fma_peak() : nullptr; break;
  }
  const std::string where = fmt::format("{} GEMMs on route {}: ", bf16 ? "bf16" : "fp32", cpu::gemm_route_name(route));
  if (p) return {p->gflops, where + p->how};
  return {bf16 ? 780.0 : 420.0, where + "no AVX-512 to measure on: the project's 2-core default (assumed, not measured)"};
}

double default_peak_gflops(Device device, DType matmul_dtype, bool tf32) {
  return default_peak(device, matmul_dtype, tf32).gflops;
}

std::string cuda_unavailable_reason() {
#ifdef SFT_HAVE_CUDA
  return cuda_probe();
#else
  return std::string("this build has no CUDA backend (") + SFT_NO_CUDA_REASON + ")";
#endif
}

}  // namespace sft
