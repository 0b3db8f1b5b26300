// create_backend(): the one place that maps a device name to a Backend implementation. The CUDA
// backend exists only in builds configured with nvcc (SFT_HAVE_CUDA, set by CMake for this file
// alone); otherwise asking for it is a clear error rather than a silent CPU fallback.
#include "backend/backend.h"
#include "backend/cpu/backend_cpu.h"
#include "backend/cpu/gemm.h"
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

double default_peak_gflops(Device device, DType matmul_dtype, bool tf32) {
  const bool bf16 = matmul_dtype == DType::bf16;
  if (device == Device::cuda) return bf16 ? 989000.0 : tf32 ? 494500.0 : 67000.0;
  // Measured once per process and dtype on the current thread count where our AVX-512 kernels run;
  // else the peaks of the project's 2-core AVX-512 machines (design.md §9).
  if (!cpu::gemm_avx512_supported(bf16)) return bf16 ? 780.0 : 420.0;
  if (bf16) {
    static const double peak_bf16 = cpu::measure_peak_gflops_avx512(true);
    return peak_bf16;
  }
  static const double peak_f32 = cpu::measure_peak_gflops_avx512(false);
  return peak_f32;
}

std::string cuda_unavailable_reason() {
#ifdef SFT_HAVE_CUDA
  return cuda_probe();
#else
  return std::string("this build has no CUDA backend (") + SFT_NO_CUDA_REASON + ")";
#endif
}

}  // namespace sft
