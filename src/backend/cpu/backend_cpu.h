// CpuBackend: the Backend interface on the host. GEMMs (fp32, or bf16 operands with fp32
// accumulation) run on our AVX-512 GEMM or on oneDNN matmul (backend/cpu/gemm.h, matmul.cpp);
// every other op is a kernel of backend/cpu/kernels.h.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace sft {

class CpuBackend final : public Backend {
 public:
  CpuBackend();
  ~CpuBackend() override;
  std::string name() const override { return "cpu"; }
  Device device() const override { return Device::cpu; }

  // Allocations from now on come from memory_of->alloc_host (create_host_backend: pinned memory of
  // a GPU backend), freed by its free_host; null: this backend's own (aligned, huge pages).
  void take_memory_from(Backend* memory_of) { memory_of_ = memory_of; }
  void* alloc(size_t bytes) override;
  void dealloc(void* ptr) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill_zero(Tensor t) override;
  std::string route_report() const override;  // the GEMM route per dtype and why (gemm_route.h)
  void set_matmul_dtype(DType dt) override;
  DType matmul_dtype() const override { return matmul_dtype_; }
  void begin_pass() override;
  bool bf16_activations() const override;  // on the oneDNN bf16 routes under the bf16 matmul dtype
  int bf16_weight_copy_bytes() const override;  // 4 on the oneDNN bf16 routes (two packed forms), else 0
  void invalidate_weight_copies(const void* ptr, size_t bytes) override;

  void linear_forward(Tensor out, Tensor x, Tensor w, Tensor bias, bool accumulate) override;
  void linear_backward(Tensor dx, Tensor dw, Tensor dbias, Tensor dout, Tensor x, Tensor w,
                       bool accumulate_dx) override;
  void embedding_forward(Tensor out, const int32_t* tokens, Tensor wte) override;
  void embedding_backward(Tensor dwte, Tensor dout, const int32_t* tokens) override;
  void rms_norm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, float eps) override;
  void residual_rms_norm_forward(Tensor res, Tensor out, Tensor rstd, Tensor x, Tensor y, Tensor w,
                                 float eps) override;
  void rms_norm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w,
                         Tensor rstd) override;
  void rope_forward(Tensor qkv, const int32_t* positions, Tensor cos, Tensor sin, int NH, int NKV,
                    int HS) override;
  void rope_backward(Tensor dqkv, const int32_t* positions, Tensor cos, Tensor sin, int NH,
                     int NKV, int HS) override;
  void attention_forward(Tensor out, Tensor lse, Tensor qkv, const SeqLayout& seqs, int NH,
                         int NKV, int HS) override;
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

 private:
  // This backend wrote [ptr, ptr + bytes) (copy, fill_zero, scale, adamw_step) or freed the
  // allocation at ptr (freed: bytes ignored): derived weight copies over it are stale.
  void weights_written(const void* ptr, size_t bytes, bool freed = false);
  struct Gemm;  // routing between our GEMM and oneDNN, bf16 copies for oneDNN (matmul.cpp)
  std::unique_ptr<Gemm> gemm_;
  DType matmul_dtype_ = DType::f32;
  Backend* memory_of_ = nullptr;  // take_memory_from
};

}  // namespace sft
