// create_backend(): the one place that maps a device name to a Backend implementation, and the
// default MFU peaks (default_peak: the instruction of each dtype's GEMM route). The CUDA backend
// exists only in builds configured with nvcc (SFT_HAVE_CUDA, set by CMake for this file alone);
// otherwise asking for it is a clear error rather than a silent CPU fallback.
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

std::unique_ptr<Backend> create_backend(const std::string& name, int local_rank) {
#ifdef SFT_HAVE_CUDA
  if (name == "cuda") return create_cuda_backend(local_rank);
#endif
  (void)local_rank;
  return create_backend(name);
}

namespace {

// The peak of one instruction: the best of 10 register/tile-only loops on the first call's OpenMP
// threads, but never below what the instruction does at the CPU's nominal clock ("cpu MHz") with
// the fewest FLOP per cycle any core that has it delivers: a shared machine busy during the
// measurement reads low (99 instead of 355 GFLOP/s fp32 on the 2-core Xeon) and would inflate MFU.
struct MeasuredPeak {
  double gflops;
  std::string how;
};
MeasuredPeak peak_of(const char* instr, const char* loop, double measured, double flop_per_cycle) {
  const int threads = omp_get_max_threads();
  const double mhz = cpu::cpu_features().mhz, floor = threads * mhz * 1e-3 * flop_per_cycle;
  if (measured >= floor)
    return {measured, fmt::format("{}, measured: {} loop on {} threads, best of 10 (clock floor {:.0f})", instr, loop,
                                  threads, floor)};
  return {floor, fmt::format("{}, derived: {} threads x {:.0f} MHz x {:.0f} FLOP/cycle (a {} loop measured only "
                             "{:.0f}: machine busy?)", instr, threads, mhz, flop_per_cycle, loop, measured)};
}
// One 512-bit FMA port: 16 lanes x 2 FLOP (two ports deliver 64).
const MeasuredPeak& fma_peak() {
  static const MeasuredPeak p = peak_of("fp32 FMA (vfmadd231ps zmm)", "register-only",
                                        cpu::measure_peak_gflops_avx512(false), 32.0);
  return p;
}
// vdpbf16ps zmm: 64 FLOP per instruction, at least one every 2 cycles (Intel; AMD Zen 4/5: 1).
const MeasuredPeak& dpbf16_peak() {
  static const MeasuredPeak p = peak_of("vdpbf16ps zmm", "register-only", cpu::measure_peak_gflops_avx512(true), 32.0);
  return p;
}
// AMX: tdpbf16ps on 16x16 fp32 += 16x32 bf16 · 32x16 bf16 = 8192 FMA = 16384 FLOP per 16 cycles
// (Intel's throughput for Sapphire/Emerald Rapids) = 1024 FLOP/cycle/core.
const MeasuredPeak& amx_peak() {
  static const MeasuredPeak p = peak_of("AMX tdpbf16ps", "tile-only", cpu::measure_peak_gflops_amx(), 1024.0);
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
    case cpu::GemmRoute::ours_amx:
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
