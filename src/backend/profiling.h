// ProfilingBackend: a Backend decorator that forwards every op to another backend and adds up
// wall time and call counts per op, for `sft bench --profile`. Each op is bracketed by
// synchronize() so that an asynchronous (GPU) backend's time lands on the op that spent it; that
// makes profiles, not fast runs.
#pragma once
#include <map>
#include <string>

#include "backend/backend.h"

namespace sft {

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  Device device() const override { return inner_->device(); }
  // A table of ops by total time, with calls and share of the total; then resets the counters.
  std::string report_and_reset();

  void synchronize() override { inner_->synchronize(); }
  std::string device_description() const override { return inner_->device_description(); }
  size_t peak_memory_bytes() const override { return inner_->peak_memory_bytes(); }
  void set_tf32(bool on) override { inner_->set_tf32(on); }
  std::string route_report() const override { return inner_->route_report(); }
  void* alloc(size_t bytes) override { return inner_->alloc(bytes); }
  void dealloc(void* ptr) override { inner_->dealloc(ptr); }
  void* alloc_host(size_t bytes) override { return inner_->alloc_host(bytes); }
  void free_host(void* ptr) override { inner_->free_host(ptr); }
  void copy_async(void* dst, const void* src, size_t bytes) override { inner_->copy_async(dst, src, bytes); }
  void reset_peak_memory() override { inner_->reset_peak_memory(); }
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill_zero(Tensor t) override;
  void set_matmul_dtype(DType dt) override { inner_->set_matmul_dtype(dt); }
  DType matmul_dtype() const override { return inner_->matmul_dtype(); }
  void begin_pass() override { inner_->begin_pass(); }
  int bf16_weight_copy_bytes() const override { return inner_->bf16_weight_copy_bytes(); }
  bool bf16_activations() const override { return inner_->bf16_activations(); }
  void invalidate_weight_copies(const void* p, size_t bytes) override { inner_->invalidate_weight_copies(p, bytes); }
  void* native_stream() override { return inner_->native_stream(); }
  void* record_event() override { return inner_->record_event(); }
  void wait_event(void* e) override { inner_->wait_event(e); }
  void destroy_event(void* e) override { inner_->destroy_event(e); }
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

 private:
  struct Stat {
    double seconds = 0;
    int64_t calls = 0;
  };
  template <typename F>
  auto timed(const char* op, F&& f);
  std::unique_ptr<Backend> inner_;
  std::map<std::string, Stat> stats_;
};

}  // namespace sft
