// AdamW (torch semantics) over the flat parameter buffer, split into decay / no-decay segments.
#include "train/optimizer.h"

#include <cmath>

namespace sft {

AdamW::AdamW(LlamaModel& model, AdamWConfig cfg) : model_(model), cfg_(cfg) {
  Backend& be = model.backend();
  const int64_t n = model.num_params();
  m_ = Tensor(be.alloc(n * 4), DType::f32, {n}, be.device());
  v_ = Tensor(be.alloc(n * 4), DType::f32, {n}, be.device());
  // Param views point into params_flat; turn them into offsets and merge neighbours.
  const float* base = model.params_flat().f32();
  for (const ParamRef& p : model.param_table()) {
    int64_t off = p.view.f32() - base, size = p.view.numel();
    if (!segments_.empty() && segments_.back().decay == p.decay &&
        segments_.back().offset + segments_.back().size == off)
      segments_.back().size += size;
    else
      segments_.push_back({off, size, p.decay});
  }
}

AdamW::~AdamW() {
  model_.backend().dealloc(m_.data);
  model_.backend().dealloc(v_.data);
}

void AdamW::step(float lr) {
  ++step_;
  Backend& be = model_.backend();
  float* p = model_.params_flat().f32();
  float* g = model_.grads_flat().f32();
  for (const Segment& s : segments_) {
    AdamWParams hp{lr, cfg_.beta1, cfg_.beta2, cfg_.eps, s.decay ? cfg_.weight_decay : 0.0f, step_};
    auto view = [&](float* base) { return Tensor(base + s.offset, DType::f32, {s.size}, be.device()); };
    be.adamw_step(view(p), view(g), view(m_.f32()), view(v_.f32()), hp);
  }
}

double grad_global_norm(LlamaModel& model) {
  return std::sqrt(model.backend().sum_squares(model.grads_flat()));
}

}  // namespace sft
