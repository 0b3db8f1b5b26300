// ReplicatedParamStore (see replicated_store.h).
#include "dist/replicated_store.h"

namespace sft {

ReplicatedParamStore::ReplicatedParamStore(const LlamaConfig& cfg, Backend& backend, Comm& comm)
    : LocalParamStore(cfg, backend), comm_(comm) {}

void ReplicatedParamStore::grads_ready(int unit) {
  const ParamUnit& u = units_[size_t(unit)];
  const Tensor g(grads_.f32() + u.offset, DType::f32, {u.size}, grads_.device);
  comm_.wait(comm_.all_reduce(g, ReduceOp::sum, "grads_ready"));
}

double ReplicatedParamStore::grad_sum_squares() {
  const int64_t n = grads_.numel(), r = comm_.rank(), N = comm_.size();
  const int64_t lo = n * r / N, hi = n * (r + 1) / N;
  return be_.sum_squares(Tensor(grads_.f32() + lo, DType::f32, {hi - lo}, grads_.device));
}

}  // namespace sft
