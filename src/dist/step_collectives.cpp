// StepCollectives (see step_collectives.h).
#include "dist/step_collectives.h"

#include "dist/replicated_store.h"
#include "dist/sharded_store.h"

namespace sft {

namespace {

void apply(ParamStore& store, DType gather, DType reduce) {
  if (auto* s = dynamic_cast<ShardedParamStore*>(&store)) {
    s->set_gather_dtype(gather);
    s->set_reduce_dtype(reduce);
  } else if (auto* r = dynamic_cast<ReplicatedParamStore*>(&store)) {
    r->set_reduce_dtype(reduce);
  }
}

}  // namespace

StepCollectives::StepCollectives(ParamStore& store, DType gather, DType reduce) : store_(store) {
  apply(store, gather, reduce);
}

StepCollectives::~StepCollectives() {
  apply(store_, DType::f32, DType::f32);
  sync_gradients(true);
}

void StepCollectives::sync_gradients(bool sync) {
  if (auto* r = dynamic_cast<ReplicatedParamStore*>(&store_)) r->set_sync(sync);
}

DType reduce_dtype_from_name(const std::string& name) {
  if (name == "fp32") return DType::f32;
  if (name == "bf16") return DType::bf16;
  fail("dist", "--fsdp_reduce_dtype {}: expected fp32 or bf16", name);
}

}  // namespace sft
