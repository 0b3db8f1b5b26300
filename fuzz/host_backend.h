// A Backend over plain host memory for the fuzz targets that need a LlamaModel (weight and
// checkpoint loading): memory, copies and zero fill work; every compute op aborts (the targets
// only load and compare tensors). It keeps the CPU kernels out of the fuzz build.
#pragma once
#include <cstdlib>
#include <cstring>

#include "backend/backend.h"

namespace sft::fuzz {

class HostBackend final : public Backend {
 public:
  std::string name() const override { return "fuzz-host"; }
  Device device() const override { return Device::cpu; }
  void* alloc(size_t bytes) override {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    std::memset(p, 0, (bytes + 63) / 64 * 64 + 64);
    return p;
  }
  void dealloc(void* ptr) override { std::free(ptr); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); }
  void fill_zero(Tensor t) override { std::memset(t.data, 0, t.nbytes()); }
  void set_matmul_dtype(DType) override {}
  DType matmul_dtype() const override { return DType::f32; }
  void begin_pass() override {}
  int bf16_weight_copy_bytes() const override { return 0; }
  void invalidate_weight_copies(const void*, size_t) override {}
  void linear_forward(Tensor, Tensor, Tensor, Tensor, bool) override { std::abort(); }
  void linear_backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, bool) override { std::abort(); }
  void embedding_forward(Tensor, const int32_t*, Tensor) override { std::abort(); }
  void embedding_backward(Tensor, Tensor, const int32_t*) override { std::abort(); }
  void rms_norm_forward(Tensor, Tensor, Tensor, Tensor, float) override { std::abort(); }
  void residual_rms_norm_forward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, float) override { std::abort(); }
  void rms_norm_backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor) override { std::abort(); }
  void rope_forward(Tensor, const int32_t*, Tensor, Tensor, int, int, int) override { std::abort(); }
  void rope_backward(Tensor, const int32_t*, Tensor, Tensor, int, int, int) override { std::abort(); }
  void attention_forward(Tensor, Tensor, Tensor, const SeqLayout&, int, int, int) override { std::abort(); }
  void attention_backward(Tensor, Tensor, Tensor, Tensor, Tensor, const SeqLayout&, int, int, int) override {
    std::abort();
  }
  void attention_forward_cached(Tensor, Tensor, int64_t, int64_t, int, int, int) override { std::abort(); }
  void swiglu_forward(Tensor, Tensor) override { std::abort(); }
  void swiglu_backward(Tensor, Tensor, Tensor) override { std::abort(); }
  void cross_entropy_forward(Tensor, Tensor, const int32_t*) override { std::abort(); }
  void cross_entropy_forward_backward(Tensor, Tensor, const int32_t*, float) override { std::abort(); }
  void cross_entropy_forward_backward_bf16(Tensor, Tensor, const int32_t*, float, Tensor) override { std::abort(); }
  void adamw_step(Tensor, Tensor, Tensor, Tensor, const AdamWParams&) override { std::abort(); }
  double sum_squares(Tensor) override { std::abort(); }
  void scale(Tensor, float) override { std::abort(); }
};

}  // namespace sft::fuzz
