// Host-side argument checks of the CUDA FlashAttention op (attention.cuh), kept out of the .cu
// files so they can report through sft::fail (fmt's compile-time format strings do not build
// under nvcc): head layout, head size, sequence count, pointers, shared-memory limits.
#include <cstdint>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/check.h"
#include "core/check.h"

namespace sft::cuda::attn {

void check_args(const char* op, int num_seqs, int max_seqlen, int64_t N, int NH, int NKV, int HS) {
  SFT_CHECK(NH > 0 && NKV > 0 && NH % NKV == 0, op, "bad head layout NH={} NKV={}", NH, NKV);
  SFT_CHECK(HS > 0 && HS % 8 == 0 && HS <= 256, op, "head size {} not supported (a multiple of 8 up to 256)", HS);
  SFT_CHECK(num_seqs >= 0 && num_seqs <= 65535, op, "{} sequences (at most 65535 per call)", num_seqs);
  SFT_CHECK(max_seqlen >= 0 && N >= 0, op, "negative max_seqlen {} or N {}", max_seqlen, N);
}

void check_ptr(const char* op, const char* name, const void* p, size_t align) {
  SFT_CHECK(p != nullptr, op, "{} is null", name);
  SFT_CHECK(reinterpret_cast<uintptr_t>(p) % align == 0, op, "{} is not {}-byte aligned", name, align);
}

void set_smem(const char* op, const void* kernel, size_t bytes) {
  int dev = 0, limit = 0;
  SFT_CUDA_CHECK(op, cudaGetDevice(&dev));
  SFT_CUDA_CHECK(op, cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  SFT_CHECK(bytes <= size_t(limit), op, "needs {} bytes of shared memory per block, the device allows {}", bytes,
            limit);
  SFT_CUDA_CHECK(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

}  // namespace sft::cuda::attn
