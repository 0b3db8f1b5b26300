// StepCollectives: how the collectives of one training step (or one evaluation) run, set on the
// model's parameter store for the scope and put back at its end, so that initialising, loading
// and checkpointing always see fp32 gathers and synchronised gradients.
//   gather: the dtype full_shard all-gathers units in (the GEMM dtype: bf16 under --bf16,
//           ShardedParamStore::set_gather_dtype);
//   reduce: the dtype gradients are reduce-scattered (full_shard, shard_grad_op) or all-reduced
//           (no_shard) in (--fsdp_reduce_dtype);
//   sync_gradients(false): no_shard leaves the gradients local for this micro-batch (DDP's
//           no_sync): its all-reduce after the step's last micro-batch sums every micro-batch of
//           every rank once. The sharded stores reduce-scatter every micro-batch (their gradients
//           stay sharded between micro-batches) and ignore it.
// A store of one process has no collectives: nothing changes.
#pragma once
#include <string>

#include "core/dtype.h"
#include "model/param_store.h"

namespace sft {

class StepCollectives {
 public:
  StepCollectives(ParamStore& store, DType gather, DType reduce);
  ~StepCollectives();
  StepCollectives(const StepCollectives&) = delete;
  StepCollectives& operator=(const StepCollectives&) = delete;
  void sync_gradients(bool sync);

 private:
  ParamStore& store_;
};

// "fp32" → f32, "bf16" → bf16 (--fsdp_reduce_dtype's words; the option table checks them).
DType reduce_dtype_from_name(const std::string& name);

}  // namespace sft
