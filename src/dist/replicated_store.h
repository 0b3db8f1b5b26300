// ReplicatedParamStore: every rank holds the whole model, gradients are all-reduced (summed) over
// the ranks unit by unit as each unit's backward completes — DDP, FSDP's `no_shard` — after the
// step's last micro-batch only (set_sync: DDP's no_sync before the others; an all-reduce of the
// accumulated buffer after each micro-batch would count the earlier ones N times). It is the
// LocalParamStore plus that one collective; each rank contributes 1/N of the flat gradient to the
// global norm, so the step's reduction adds the shares up exactly once. The all-reduce is fp32, or
// bf16 when asked (set_reduce_dtype, --fsdp_reduce_dtype bf16: HF Trainer's bf16 reduce).
#pragma once
#include "dist/comm.h"
#include "model/param_store.h"

namespace sft {

class ReplicatedParamStore final : public LocalParamStore {
 public:
  ReplicatedParamStore(const LlamaConfig& cfg, Backend& backend, Comm& comm);
  ~ReplicatedParamStore() override;
  void grads_ready(int unit) override;
  double grad_sum_squares() override;
  // f32 (one process's math up to summation order) or bf16: each unit's gradient rounded to bf16,
  // summed over the ranks in bf16, widened back into the fp32 gradient.
  void set_reduce_dtype(DType dt);
  DType reduce_dtype() const { return reduce_dtype_; }
  // Whether grads_ready all-reduces (the step's last micro-batch; train_step sets it) or leaves the
  // gradients to accumulate locally.
  void set_sync(bool sync) { sync_ = sync; }

 private:
  Comm& comm_;
  DType reduce_dtype_ = DType::f32;
  bool sync_ = true;
  Tensor buf16_;  // (largest unit) bf16, allocated on the first bf16 reduce
};

}  // namespace sft
