// AdamW over the parameters a ParamStore holds in this process, as torch.optim.AdamW (decoupled
// weight decay, bias-corrected moments), with weight decay only on matmul/embedding weights (HF
// Trainer's rule: no decay on norm weights and biases). The moments are the store's named states
// "exp_avg" and "exp_avg_sq", so checkpoints save them by name and a sharded store holds 1/N.
#pragma once
#include <cstdint>
#include <vector>

#include "io/checkpoint.h"
#include "model/llama.h"
#include "model/param_store.h"

namespace sft {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
};

class AdamW {
 public:
  AdamW(ParamStore& store, AdamWConfig cfg);
  AdamW(LlamaModel& model, AdamWConfig cfg) : AdamW(model.store(), cfg) {}
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;
  // One update of every local parameter with the store's current gradients at learning rate lr.
  // grad_scale: the clipping factor, applied to each gradient inside the update (1: none)
  void step(float lr, float grad_scale = 1.0f);
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  Tensor m() const { return m_; }  // (local params) first moments, same layout as local_params()
  Tensor v() const { return v_; }  // (local params) second moments
  // What a checkpoint holds of it (the moments by name, the step count), and its restore.
  OptimizerState state() const { return {{{"exp_avg", m_}, {"exp_avg_sq", v_}}, step_}; }

 private:
  ParamStore& store_;
  AdamWConfig cfg_;
  Tensor m_, v_;
  int64_t step_ = 0;
  // Runs of the local buffers with one decay setting: the store's local slices cut by the HF
  // tensors' decay rule, neighbours merged.
  struct Segment { int64_t local_offset, size; bool decay; };
  std::vector<Segment> segments_;
};

// Σ g² over the gradients this process holds (double accumulation): the local part of the
// global gradient norm (the train step all-reduces it).
double grad_sum_squares(ParamStore& store);
// g *= factor over the local gradients (global-norm clipping).
void scale_grads(ParamStore& store, float factor);
// Global L2 norm of all gradients of a one-process model.
double grad_global_norm(LlamaModel& model);

}  // namespace sft
