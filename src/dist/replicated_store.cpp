// ReplicatedParamStore (see replicated_store.h).
#include "dist/replicated_store.h"

#include <algorithm>

#include "backend/host_access.h"
#include "core/dtype.h"

namespace sft {

ReplicatedParamStore::ReplicatedParamStore(const LlamaConfig& cfg, Backend& backend, Comm& comm)
    : LocalParamStore(cfg, backend), comm_(comm) {}

ReplicatedParamStore::~ReplicatedParamStore() {
  if (buf16_.data) be_.dealloc(buf16_.data);
}

void ReplicatedParamStore::set_reduce_dtype(DType dt) {
  SFT_CHECK(dt == DType::f32 || dt == DType::bf16, "replicated_store", "reduce dtype {}, expected f32 or bf16",
            dtype_name(dt));
  reduce_dtype_ = dt;
}

void ReplicatedParamStore::grads_ready(int unit) {
  if (!sync_) return;
  const ParamUnit& u = units_[size_t(unit)];
  const Tensor g(grads_.f32() + u.offset, DType::f32, {u.size}, grads_.device);
  if (reduce_dtype_ == DType::f32) {
    comm_.wait(comm_.all_reduce(g, ReduceOp::sum, "grads_ready"));
    return;
  }
  if (!buf16_.data) {
    int64_t largest = 0;
    for (const ParamUnit& x : units_) largest = std::max(largest, x.size);
    buf16_ = Tensor(be_.alloc(size_t(largest) * 2), DType::bf16, {largest}, be_.device());
  }
  // g (size) rounded to bf16, summed over the ranks in bf16, widened back into g
  const Tensor g16(buf16_.data, DType::bf16, {u.size}, be_.device());
  HostTensor full(be_, g, true), rounded(be_, g16, false);
  convert_f32_to_bf16(full.f32(), rounded.host_view().bf16(), size_t(u.size));
  rounded.store();
  comm_.wait(comm_.all_reduce(g16, ReduceOp::sum, "grads_ready"));
  HostTensor summed(be_, g16, true);
  convert_bf16_to_f32(summed.host_view().bf16(), full.f32(), size_t(u.size));
  full.store();
}

double ReplicatedParamStore::grad_sum_squares() {
  const int64_t n = grads_.numel(), r = comm_.rank(), N = comm_.size();
  const int64_t lo = n * r / N, hi = n * (r + 1) / N;
  return be_.sum_squares(Tensor(grads_.f32() + lo, DType::f32, {hi - lo}, grads_.device));
}

}  // namespace sft
