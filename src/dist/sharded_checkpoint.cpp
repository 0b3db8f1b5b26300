// write_on_rank0 and load_checkpoint_any (see sharded_checkpoint.h), and the part of
// ShardedParamStore they stand on: rank 0 reading the full model while the other ranks serve the
// gathers it needs, and optimizer states gathered to rank 0 unit by unit.
#include "dist/sharded_checkpoint.h"

#include <filesystem>
#include <vector>

#include "dist/sharded_store.h"
#include "io/safetensors.h"

namespace sft {

namespace {
constexpr double kEndAccess = -1, kServerCode = -2;  // root_access codes besides unit numbers
}  // namespace

// ---- ShardedParamStore: rank-0 access ----

void ShardedParamStore::announce(double code) {
  comm_.all_reduce_host(&code, 1, ReduceOp::max, "root_access");
}

void ShardedParamStore::begin_root_access() {
  finish_all_reduces();
  for (Slot& s : slots_) {  // a prefetch in flight completes; every rank does the same
    wait_slot(s);
    if (s.unit >= 0 && refs_[size_t(s.unit)] == 0) {
      slot_of_[size_t(s.unit)] = -1;
      s.unit = -1;
    }
  }
  root_access_ = true;
}

void ShardedParamStore::end_root_access() {
  if (rank_ == 0) announce(kEndAccess);
  root_access_ = false;
}

void ShardedParamStore::serve_root() {
  SFT_CHECK(rank_ != 0 && root_access_, "sharded_store", "serve_root on rank {} ({} root access)", rank_,
            root_access_ ? "in" : "outside");
  for (;;) {
    double code = kServerCode;
    comm_.all_reduce_host(&code, 1, ReduceOp::max, "root_access");
    if (code < 0) break;
    const int unit = int(code);
    Slot& s = slots_[size_t(gather(unit))];
    wait_slot(s);
    s.unit = -1;
    slot_of_[size_t(unit)] = -1;
  }
  root_access_ = false;
}

void ShardedParamStore::gather_to_root(Tensor local, Tensor full) {
  SFT_CHECK(local.numel() == shard_.numel() && (rank_ != 0 || full.numel() == num_params_), "sharded_store",
            "gather_to_root of {} elements into {}, expected {} into {}", local.numel(), full.numel(),
            shard_.numel(), num_params_);
  Tensor buf(be_.alloc(size_t(max_padded_) * 4), DType::f32, {max_padded_}, be_.device());
  for (int u = 0; u < num_units(); ++u) {
    comm_.wait(comm_.all_gather(padded_unit(buf.f32(), u), shard_of(local, u), "state to rank 0"));
    if (rank_ == 0)
      be_.copy(full.f32() + units_[size_t(u)].offset, buf.data, size_t(units_[size_t(u)].size) * 4);
  }
  be_.dealloc(buf.data);
}


void write_on_rank0(LlamaModel& model, Comm& comm, const OptimizerState& local,
                    const std::function<void(const OptimizerState& full)>& write) {
  auto* sharded = dynamic_cast<ShardedParamStore*>(&model.store());
  if (!sharded) {
    if (comm.rank() == 0) write(local);
    return;
  }
  Backend& be = model.backend();
  const bool root = comm.rank() == 0;
  OptimizerState full{{}, local.steps};
  struct Free {  // the full states of rank 0, whatever happens
    Backend& be;
    OptimizerState& s;
    ~Free() {
      for (auto& [name, t] : s.tensors) be.dealloc(t.data);
    }
  } free_full{be, full};
  for (const auto& [name, t] : local.tensors) {
    Tensor f;
    if (root) {
      const int64_t n = model.num_params();
      f = Tensor(be.alloc(size_t(n) * 4), DType::f32, {n}, be.device());
      full.tensors.emplace_back(name, f);
    }
    sharded->gather_to_root(t, f);
  }
  sharded->begin_root_access();
  if (!root) {
    sharded->serve_root();
    return;
  }
  try {
    write(full);
  } catch (...) {
    sharded->end_root_access();  // the others stop serving; the error travels on from rank 0
    throw;
  }
  sharded->end_root_access();
}

nlohmann::json load_checkpoint_any(const std::string& dir, LlamaModel& model, OptimizerState& local) {
  auto* sharded = dynamic_cast<ShardedParamStore*>(&model.store());
  if (!sharded) return load_checkpoint(dir, model, local);
  OptimizerState steps_only{{}, 0};
  nlohmann::json state = load_checkpoint(dir, model, steps_only);  // weights: each rank keeps its block
  local.steps = steps_only.steps;
  const std::string path = (std::filesystem::path(dir) / "optimizer.safetensors").string();
  const SafetensorsFile f(path);
  for (const auto& [name, dst] : local.tensors) {
    const SafetensorsTensorInfo& t = f.at(name);
    SFT_CHECK(t.dtype == "F32" && t.numel() == model.num_params(), "checkpoint",
              "{}: '{}' is {} {}, expected F32 ({},), the full layout of every parameter", path, name, t.dtype,
              t.shape_str(), model.num_params());
    const float* src = reinterpret_cast<const float*>(t.data);
    for (const LocalSlice& s : sharded->local_slices())
      model.backend().copy(dst.f32() + s.local_offset, src + s.offset, size_t(s.size) * 4);
  }
  return state;
}

}  // namespace sft
