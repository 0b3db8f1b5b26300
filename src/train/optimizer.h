// AdamW over the model's flat fp32 parameters, as torch.optim.AdamW (decoupled weight decay,
// bias-corrected moments), with weight decay only on matmul/embedding weights (HF Trainer's rule:
// no decay on norm weights and biases). Moments are fp32 buffers owned here.
#pragma once
#include <cstdint>
#include <vector>

#include "model/llama.h"

namespace sft {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
};

class AdamW {
 public:
  AdamW(LlamaModel& model, AdamWConfig cfg);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;
  // One update of every parameter with the model's current gradients at learning rate lr.
  void step(float lr);
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  Tensor m() const { return m_; }  // (num_params) first moments, same layout as params_flat
  Tensor v() const { return v_; }  // (num_params) second moments

 private:
  LlamaModel& model_;
  AdamWConfig cfg_;
  Tensor m_, v_;
  int64_t step_ = 0;
  // Contiguous runs of the flat buffer with one decay setting, merged from the param table.
  struct Segment { int64_t offset, size; bool decay; };
  std::vector<Segment> segments_;
};

// Global L2 norm of all gradients (double accumulation).
double grad_global_norm(LlamaModel& model);

}  // namespace sft
