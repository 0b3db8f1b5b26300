// CudaBackend: the Backend interface on one NVIDIA GPU (compute capability 8.0+). Every op is
// queued on one stream, which native_stream() and record_event()/wait_event() expose so that
// communication (dist/) is ordered with compute without device-wide syncs; host-side int32 inputs (tokens, positions, targets, cu_seqlens) go through
// pinned staging buffers and are re-sent only when their contents change. GEMMs go through
// cuBLASLt (matmul.cpp), FlashAttention through attention.cuh, the other ops through kernels.h.
// Host only: compiled by the C++ compiler, no device code here.
#pragma once
#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"

namespace sft {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int local_rank = -1);  // see create_cuda_backend
  ~CudaBackend() override;
  std::string name() const override { return "cuda"; }
  Device device() const override { return Device::cuda; }
  std::string device_description() const override;
  size_t peak_memory_bytes() const override { return peak_bytes_; }
  void reset_peak_memory() override { peak_bytes_ = bytes_in_use_; }
  void synchronize() override;
  void set_tf32(bool on) override { tf32_ = on; }

  void* alloc(size_t bytes) override;
  void dealloc(void* ptr) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill_zero(Tensor t) override;
  void* alloc_host(size_t bytes) override;  // pinned (cudaHostAlloc), zero-filled
  void free_host(void* ptr) override;
  void copy_async(void* dst, const void* src, size_t bytes) override;  // cudaMemcpyAsync on the stream
  void set_matmul_dtype(DType dt) override;
  DType matmul_dtype() const override { return matmul_dtype_; }
  void begin_pass() override;
  int bf16_weight_copy_bytes() const override { return 2; }  // one bf16 copy, kept across passes (matmul.cpp)
  void invalidate_weight_copies(const void* ptr, size_t bytes) override { weights_written(ptr, bytes); }

  void* native_stream() override { return stream_; }  // cudaStream_t
  void* record_event() override;                      // cudaEvent_t (timing disabled)
  void wait_event(void* event) override;
  void destroy_event(void* event) override;

  void linear_forward(Tensor out, Tensor x, Tensor w, Tensor bias, bool accumulate) override;
  void linear_backward(Tensor dx, Tensor dw, Tensor dbias, Tensor dout, Tensor x, Tensor w,
                       bool accumulate_dx) override;
  void embedding_forward(Tensor out, const int32_t* tokens, Tensor wte) override;
  void embedding_backward(Tensor dwte, Tensor dout, const int32_t* tokens) override;
  void rms_norm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, float eps) override;
  void residual_rms_norm_forward(Tensor res, Tensor out, Tensor rstd, Tensor x, Tensor y, Tensor w,
                                 float eps) override;
  void rms_norm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w, Tensor rstd) override;
  void rope_forward(Tensor qkv, const int32_t* positions, Tensor cos, Tensor sin, int NH, int NKV,
                    int HS) override;
  void rope_backward(Tensor dqkv, const int32_t* positions, Tensor cos, Tensor sin, int NH, int NKV,
                     int HS) override;
  void attention_forward(Tensor out, Tensor lse, Tensor qkv, const SeqLayout& seqs, int NH, int NKV,
                         int HS) override;
  void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                          const SeqLayout& seqs, int NH, int NKV, int HS) override;
  void attention_forward_cached(Tensor out, Tensor qkv_cache, int64_t start, int64_t n, int NH, int NKV,
                                int HS) override;
  void swiglu_forward(Tensor out, Tensor gu) override;
  void swiglu_backward(Tensor dgu, Tensor dout, Tensor gu) override;
  void cross_entropy_forward(Tensor losses, Tensor logits, const int32_t* targets) override;
  void cross_entropy_forward_backward(Tensor losses, Tensor logits, const int32_t* targets,
                                      float dloss_scale) override;
  void cross_entropy_forward_backward_bf16(Tensor losses, Tensor logits, const int32_t* targets, float dloss_scale,
                                           Tensor dlogits16) override;
  void adamw_step(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) override;
  double sum_squares(Tensor x) override;
  void scale(Tensor x, float s) override;

  // Device memory for the backend's own scratch (counted in the peak like alloc()); not zeroed.
  // free_device() waits for queued work first, since kernels may still read the buffer.
  void* alloc_scratch(size_t bytes, const char* what);
  void free_device(void* ptr);

 private:
  // A host int32 array mirrored on the device: pinned staging, device copy, and the last
  // contents sent (so an unchanged array is not copied again).
  struct IntStaging {
    int32_t* pinned = nullptr;
    int32_t* device = nullptr;
    size_t capacity = 0;
    std::vector<int32_t> sent;
    cudaEvent_t copied = nullptr;  // the pinned buffer may be rewritten once this has passed
  };
  enum Slot { kTokens, kPositions, kTargets, kCuSeqlens, kNumSlots };
  const int32_t* stage(Slot slot, const int32_t* host, int64_t n);
  int max_seqlen(const SeqLayout& seqs) const;
  float* attention_workspace(size_t bytes);
  void create_gemm();                                // matmul.cpp
  void forget_weights(const void* begin, size_t bytes);  // drop bf16 copies of weights in a freed range
  // The bf16 weight cache (matmul.cpp) when the backend writes fp32 data. weights_written(): copies
  // overlapping the byte range go stale (re-rounded on next use). weight_copies_in(): the copies
  // lying wholly inside the fp32 range [p, p + n), sorted by offset and not overlapping, which the
  // caller rewrites in full from the new values in queue order (adamw_step), so they are marked
  // valid; copies only partly inside go stale.
  struct WeightCopy {
    int64_t offset, n;  // elements of the range [p + offset, p + offset + n)
    uint16_t* bf16;     // (n)
  };
  void weights_written(const void* begin, size_t bytes);
  std::vector<WeightCopy> weight_copies_in(const float* p, int64_t n);

  struct Gemm;  // cuBLASLt handle, plans, workspace, bf16 operand scratch and weight cache
  struct GemmDeleter {
    void operator()(Gemm* g) const;  // matmul.cpp, where Gemm is complete
  };
  std::unique_ptr<Gemm, GemmDeleter> gemm_;
  int device_ = 0;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  DType matmul_dtype_ = DType::f32;
  bool tf32_ = false;
  std::unordered_map<void*, size_t> allocations_;
  size_t bytes_in_use_ = 0, peak_bytes_ = 0;
  IntStaging staging_[kNumSlots];
  double* reduce_scratch_ = nullptr;  // kReduceBlocks partials + 1 result
  float* attn_workspace_ = nullptr;
  size_t attn_workspace_bytes_ = 0;
};

}  // namespace sft
