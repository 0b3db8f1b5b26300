// write_on_rank0 and load_checkpoint_any (see sharded_checkpoint.h).
#include "dist/sharded_checkpoint.h"

#include <filesystem>
#include <vector>

#include "dist/sharded_store.h"
#include "io/safetensors.h"

namespace sft {

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
