// Helpers of the ShardedParamStore tests in tests/dist (test_sharded_store.cpp, test_offload.cpp):
// a model config whose units do not divide by 2 or 3, each step's micro-batches, the one-process
// run and a ThreadWorld run of a sharded store (rank 0's steps, the full states placed from every
// rank's slices, its store's accounting).
#pragma once
#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "dist/comm.h"
#include "dist/sharded_store.h"
#include "model/init.h"
#include "train/train_step.h"
#include "dist_test_util.h"

namespace sft::sharded_test {

using dist_test::make_batch;
using dist_test::run_ranks;

// Hidden size 35 (apart from head_dim 8 × 4 heads = 32): the embedding (1855) and each layer
// (8365) have odd sizes and leave a remainder of 1 over 3 ranks, the tied head (35) too, so the
// last rank's block of those units is padded.
inline LlamaConfig odd_config(bool tied = false) {
  LlamaConfig c;
  c.vocab_size = 53;
  c.hidden_size = 35;
  c.intermediate_size = 47;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = tied;
  return c;
}

inline const AdamWConfig kAdam{0.9f, 0.999f, 1e-8f, 0.01f};
inline constexpr int kSteps = 3;

struct Trained {
  std::vector<StepResult> steps;
  std::vector<float> params, m, v;  // full layout (one process's), rank 0
  int peak_resident = 0;
  int64_t train_gathered_bytes = 0;  // rank 0's weight all-gathers during the steps (after init)
  int64_t persistent_bytes = 0;      // rank 0's store after the steps (ShardedParamStore's accounting)
  int64_t device_bytes = 0;
  std::vector<std::string> collectives;  // rank 0's, in issue order ("op:what", ThreadWorld's log)
};

inline std::vector<float> host_copy(Tensor t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

// Rank r trains micro-batches {micro[2r], micro[2r+1]} (accumulated in its gradient shard) of each step.
inline std::vector<Batch> micro_batches(int world) {
  std::vector<Batch> out;
  for (int i = 0; i < 2 * world; ++i) out.push_back(make_batch(1 + i % 3, 6 + i % 4, 100 + uint64_t(i), true, 53));
  return out;
}

inline Trained one_process(const LlamaConfig& cfg, int world, DType matmul = DType::f32) {
  auto be = create_backend("cpu");
  be->set_matmul_dtype(matmul);
  LlamaModel model(cfg, *be);
  init_weights(model, 7);
  AdamW opt(model, kAdam);
  const std::unique_ptr<Comm> local = make_local_comm(*be);
  Trained run;
  for (int s = 0; s < kSteps; ++s) run.steps.push_back(train_step(model, opt, *local, micro_batches(world), 1e-2, {}));
  run.params = host_copy(model.params_flat());
  run.m = host_copy(opt.m());
  run.v = host_copy(opt.v());
  return run;
}

// Copies a rank's local state (shaped like its store's local buffers) into the full layout.
inline void place_slices(const ShardedParamStore& ss, Tensor local, std::vector<float>& full) {
  for (const LocalSlice& s : ss.local_slices())
    std::copy_n(local.f32() + s.local_offset, s.size, full.begin() + s.offset);
}

// world ranks in nodes of ranks_per_node (0: one node; hybrid modes replicate across the nodes).
// run holds the first node's full states (rank 0's steps); replicas[n] the params of node n.
inline Trained sharded(const LlamaConfig& cfg, int world, ShardMode mode, ModelOptions mopt = {},
                       DType matmul = DType::f32, StepOptions step = {}, int ranks_per_node = 0,
                       std::vector<std::vector<float>>* replicas = nullptr, ShardOptions store_opt = {}) {
  ThreadWorld tw(world, ranks_per_node);
  Trained run;
  const int nodes = ranks_per_node > 0 ? world / ranks_per_node : 1;
  const size_t n_nodes = size_t(nodes);
  std::vector<std::vector<float>> params(n_nodes), m(n_nodes), v(n_nodes);
  std::mutex mu;
  const std::vector<Batch> all = micro_batches(world);
  run_ranks(world, [&](int r) {
    auto be = create_backend("cpu");
    be->set_matmul_dtype(matmul);
    auto store = std::make_unique<ShardedParamStore>(cfg, *be, tw.comm(r), mode, store_opt);
    ShardedParamStore& ss = *store;
    LlamaModel model(cfg, *be, mopt, std::move(store));
    init_weights(model, 7);
    AdamW opt(model, kAdam);
    ss.reset_peak_resident();
    const int64_t init_bytes = ss.gathered_bytes();
    std::vector<StepResult> steps;
    for (int s = 0; s < kSteps; ++s)
      steps.push_back(train_step(model, opt, tw.comm(r), {all[size_t(2 * r)], all[size_t(2 * r + 1)]}, 1e-2, step));
    const int64_t train_bytes = ss.gathered_bytes() - init_bytes;
    const size_t node = ranks_per_node > 0 ? size_t(r / ranks_per_node) : 0;
    {
      std::lock_guard lock(mu);
      for (auto* full : {&params[node], &m[node], &v[node]}) full->resize(size_t(model.num_params()));
      place_slices(ss, ss.local_params(), params[node]);
      place_slices(ss, opt.m(), m[node]);
      place_slices(ss, opt.v(), v[node]);
    }
    if (r != 0) return;
    run.steps = steps;
    run.peak_resident = ss.peak_resident_units();
    run.train_gathered_bytes = train_bytes;
    run.persistent_bytes = ss.persistent_bytes();
    run.device_bytes = ss.device_bytes();
  });
  run.params = params[0];
  run.m = m[0];
  run.v = v[0];
  run.collectives = tw.log(0);
  if (replicas) *replicas = params;
  return run;
}

}  // namespace sft::sharded_test
