// AdamW (torch semantics) over the store's local buffers, split into decay / no-decay segments.
#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

namespace sft {

AdamW::AdamW(ParamStore& store, AdamWConfig cfg) : store_(store), cfg_(cfg) {
  m_ = store.add_state("exp_avg");
  v_ = store.add_state("exp_avg_sq");
  // Each HF tensor's decay rule over the part of it inside a local slice.
  for (const LocalSlice& s : store.local_slices())
    for (const ParamRef& p : store.param_table()) {
      const int64_t lo = std::max(p.offset, s.offset), hi = std::min(p.offset + p.view.numel(), s.offset + s.size);
      if (lo >= hi) continue;
      const int64_t off = s.local_offset + (lo - s.offset), size = hi - lo;
      if (!segments_.empty() && segments_.back().decay == p.decay &&
          segments_.back().local_offset + segments_.back().size == off)
        segments_.back().size += size;
      else
        segments_.push_back({off, size, p.decay});
    }
  std::sort(segments_.begin(), segments_.end(), [](const Segment& a, const Segment& b) {
    return a.local_offset < b.local_offset;
  });
}

void AdamW::step(float lr, float grad_scale) {
  ++step_;
  Backend& be = store_.backend();
  float* p = store_.local_params().f32();
  float* g = store_.local_grads().f32();
  for (const Segment& s : segments_) {
    AdamWParams hp{lr, cfg_.beta1, cfg_.beta2, cfg_.eps, s.decay ? cfg_.weight_decay : 0.0f, step_, grad_scale};
    auto view = [&](float* base) { return Tensor(base + s.local_offset, DType::f32, {s.size}, be.device()); };
    be.adamw_step(view(p), view(g), view(m_.f32()), view(v_.f32()), hp);
  }
  store_.params_updated();
}

double grad_sum_squares(ParamStore& store) { return store.grad_sum_squares(); }

void scale_grads(ParamStore& store, float factor) { store.backend().scale(store.local_grads(), factor); }

double grad_global_norm(LlamaModel& model) { return std::sqrt(grad_sum_squares(model.store())); }

}  // namespace sft
