// ReplicatedParamStore: every rank holds the whole model, gradients are all-reduced (summed) over
// the ranks unit by unit as each unit's backward completes — DDP, FSDP's `no_shard`. It is the
// LocalParamStore plus that one collective; each rank contributes 1/N of the flat gradient to the
// global norm, so the step's reduction adds the shares up exactly once.
#pragma once
#include "dist/comm.h"
#include "model/param_store.h"

namespace sft {

class ReplicatedParamStore final : public LocalParamStore {
 public:
  ReplicatedParamStore(const LlamaConfig& cfg, Backend& backend, Comm& comm);
  void grads_ready(int unit) override;
  double grad_sum_squares() override;

 private:
  Comm& comm_;
};

}  // namespace sft
