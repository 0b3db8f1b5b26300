// ProfilingBackend: per-op wall time around each forwarded call.
#include "backend/profiling.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include <fmt/format.h>

namespace sft {

template <typename F>
auto ProfilingBackend::timed(const char* op, F&& f) {
  inner_->synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  struct Done {  // adds the time on every exit path, including for value-returning ops
    Backend& be;
    Stat& s;
    std::chrono::steady_clock::time_point t0;
    ~Done() {
      try {
        be.synchronize();
      } catch (...) {  // a device fault: the next op (outside a destructor) reports it
      }
      s.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++s.calls;
    }
  } done{*inner_, stats_[op], t0};
  return f();
}

std::string ProfilingBackend::report_and_reset() {
  std::vector<std::pair<std::string, Stat>> rows(stats_.begin(), stats_.end());
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
  double total = 0;
  for (auto& [name, s] : rows) total += s.seconds;
  std::string out = fmt::format("{:<32} {:>10} {:>8} {:>7}\n", "op", "seconds", "calls", "share");
  for (auto& [name, s] : rows)
    out += fmt::format("{:<32} {:>10.3f} {:>8} {:>6.1f}%\n", name, s.seconds, s.calls, 100.0 * s.seconds / total);
  stats_.clear();
  return out;
}

void ProfilingBackend::copy(void* dst, const void* src, size_t bytes) {
  timed("copy", [&] { inner_->copy(dst, src, bytes); });
}
void ProfilingBackend::fill_zero(Tensor t) {
  timed("fill_zero", [&] { inner_->fill_zero(t); });
}
void ProfilingBackend::linear_forward(Tensor out, Tensor x, Tensor w, Tensor bias, bool accumulate) {
  const std::string op = fmt::format("linear_forward {}x{}", w.dim(0), w.dim(1));
  timed(op.c_str(), [&] { inner_->linear_forward(out, x, w, bias, accumulate); });
}
void ProfilingBackend::linear_backward(Tensor dx, Tensor dw, Tensor dbias, Tensor dout, Tensor x, Tensor w,
                                       bool accumulate_dx) {
  const std::string op = fmt::format("linear_backward {}x{}", w.dim(0), w.dim(1));
  timed(op.c_str(), [&] { inner_->linear_backward(dx, dw, dbias, dout, x, w, accumulate_dx); });
}
void ProfilingBackend::embedding_forward(Tensor out, const int32_t* tokens, Tensor wte) {
  timed("embedding_forward", [&] { inner_->embedding_forward(out, tokens, wte); });
}
void ProfilingBackend::embedding_backward(Tensor dwte, Tensor dout, const int32_t* tokens) {
  timed("embedding_backward", [&] { inner_->embedding_backward(dwte, dout, tokens); });
}
void ProfilingBackend::rms_norm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, float eps) {
  timed("rms_norm_forward", [&] { inner_->rms_norm_forward(out, rstd, x, w, eps); });
}
void ProfilingBackend::residual_rms_norm_forward(Tensor res, Tensor out, Tensor rstd, Tensor x, Tensor y,
                                                 Tensor w, float eps) {
  timed("residual_rms_norm_forward", [&] { inner_->residual_rms_norm_forward(res, out, rstd, x, y, w, eps); });
}
void ProfilingBackend::rms_norm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w, Tensor rstd) {
  timed("rms_norm_backward", [&] { inner_->rms_norm_backward(dx, dw, dout, x, w, rstd); });
}
void ProfilingBackend::rope_forward(Tensor qkv, const int32_t* positions, Tensor cos, Tensor sin, int NH, int NKV,
                                    int HS) {
  timed("rope_forward", [&] { inner_->rope_forward(qkv, positions, cos, sin, NH, NKV, HS); });
}
void ProfilingBackend::rope_backward(Tensor dqkv, const int32_t* positions, Tensor cos, Tensor sin, int NH,
                                     int NKV, int HS) {
  timed("rope_backward", [&] { inner_->rope_backward(dqkv, positions, cos, sin, NH, NKV, HS); });
}
void ProfilingBackend::attention_forward(Tensor out, Tensor lse, Tensor qkv, const SeqLayout& seqs, int NH,
                                         int NKV, int HS) {
  timed("attention_forward", [&] { inner_->attention_forward(out, lse, qkv, seqs, NH, NKV, HS); });
}
void ProfilingBackend::attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                          const SeqLayout& seqs, int NH, int NKV, int HS) {
  timed("attention_backward", [&] { inner_->attention_backward(dqkv, dout, qkv, out, lse, seqs, NH, NKV, HS); });
}
void ProfilingBackend::attention_forward_cached(Tensor out, Tensor qkv_cache, int64_t start, int64_t n, int NH,
                                                int NKV, int HS) {
  timed("attention_forward_cached", [&] { inner_->attention_forward_cached(out, qkv_cache, start, n, NH, NKV, HS); });
}
void ProfilingBackend::swiglu_forward(Tensor out, Tensor gu) {
  timed("swiglu_forward", [&] { inner_->swiglu_forward(out, gu); });
}
void ProfilingBackend::swiglu_backward(Tensor dgu, Tensor dout, Tensor gu) {
  timed("swiglu_backward", [&] { inner_->swiglu_backward(dgu, dout, gu); });
}
void ProfilingBackend::cross_entropy_forward(Tensor losses, Tensor logits, const int32_t* targets) {
  timed("cross_entropy_forward", [&] { inner_->cross_entropy_forward(losses, logits, targets); });
}
void ProfilingBackend::cross_entropy_forward_backward(Tensor losses, Tensor logits, const int32_t* targets,
                                                      float dloss_scale) {
  timed("cross_entropy_fwd_bwd", [&] { inner_->cross_entropy_forward_backward(losses, logits, targets, dloss_scale); });
}
void ProfilingBackend::cross_entropy_forward_backward_bf16(Tensor losses, Tensor logits, const int32_t* targets,
                                                           float dloss_scale, Tensor dlogits16) {
  timed("cross_entropy_fwd_bwd", [&] {
    inner_->cross_entropy_forward_backward_bf16(losses, logits, targets, dloss_scale, dlogits16);
  });
}
void ProfilingBackend::adamw_step(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) {
  timed("adamw_step", [&] { inner_->adamw_step(param, grad, m, v, p); });
}
double ProfilingBackend::sum_squares(Tensor x) {
  return timed("sum_squares", [&] { return inner_->sum_squares(x); });
}
void ProfilingBackend::scale(Tensor x, float s) {
  timed("scale", [&] { inner_->scale(x, s); });
}

}  // namespace sft
