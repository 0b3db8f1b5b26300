// Error checks for the CUDA backend: every CUDA runtime call, cuBLASLt call and kernel launch is
// checked, and a failure throws sft::Error naming the op, the call, file:line and CUDA's message.
// Plain C++ with no fmt, so .cu and .cpp files share it. SFT_CUDA_SYNC=1 synchronises after every
// launch, so that an asynchronous kernel fault is reported by the op that caused it.
#pragma once
#include <cuda_runtime_api.h>

namespace sft::cuda {

[[noreturn]] void fail_call(const char* op, const char* call, const char* file, int line, const char* message);
// cudaGetLastError() after a launch (and a device sync when sync_after_launch is set).
void check_launch(const char* op, const char* file, int line);
extern bool sync_after_launch;

}  // namespace sft::cuda

#define SFT_CUDA_CHECK(op, call)                                                         \
  do {                                                                                   \
    const cudaError_t sft_err_ = (call);                                                 \
    if (sft_err_ != cudaSuccess)                                                         \
      ::sft::cuda::fail_call(op, #call, __FILE__, __LINE__, cudaGetErrorString(sft_err_)); \
  } while (0)

#define SFT_CUDA_LAUNCHED(op) ::sft::cuda::check_launch(op, __FILE__, __LINE__)
