// Checkpoints and the final model under data parallelism, whatever the store: rank 0 writes the
// same files one process writes (HF model in fp32, optimizer states in the full flat layout), so a
// checkpoint moves freely between one process, no_shard and the sharded modes. With a sharded
// store the other ranks feed rank 0 unit by unit (never more than one unit's buffer each), and on
// resume every rank takes its own slice of the full files.
#pragma once
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "dist/comm.h"
#include "io/checkpoint.h"
#include "model/llama.h"

namespace sft {

// Every rank calls it; write runs on rank 0 with the optimizer state in its full layout (`local`
// itself when the store holds everything). A sharded store gathers each state to rank 0 (rank 0
// holds the full states while it writes: 2 × 4 bytes per parameter there, for now) and serves
// the units rank 0 acquires while write runs.
void write_on_rank0(LlamaModel& model, Comm& comm, const OptimizerState& local,
                    const std::function<void(const OptimizerState& full)>& write);

// load_checkpoint for any store: a sharded store loads the weights unit by unit (each rank keeps
// its block) and copies its slices of each optimizer state from the full flat tensors
// (memory-mapped). Returns trainer_state.json.
nlohmann::json load_checkpoint_any(const std::string& dir, LlamaModel& model, OptimizerState& local);

}  // namespace sft
