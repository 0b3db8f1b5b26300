// The optimizer state's files in a checkpoint, in two layouts that both index the flat layout of
// all parameters (HF order), so a checkpoint resumes at any world size by re-slicing:
// `optimizer.safetensors` (one process, no_shard: every state as one tensor over every parameter)
// and, for sharded stores, one `optimizer-rank-XXXXX-of-YYYYY.safetensors` per rank (each state
// as that rank's local buffer, its metadata listing which flat ranges the buffer holds).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "model/param_store.h"

namespace sft {

constexpr const char* kOptimizerFile = "optimizer.safetensors";

// "optimizer-rank-00001-of-00003.safetensors"
std::string optimizer_rank_file(int rank, int world);

// dir/optimizer.safetensors: every state of `full` (each num_params long) and its step count.
void write_optimizer_full(const std::string& dir, Backend& be, const OptimizerState& full);

// dir/optimizer_rank_file(rank, world): every state of `local` as it is (its slices' values and
// the store's padding between them), the slices (flat offset, local offset, size) in the metadata
// as "slices", with "num_params", "rank", "world" and "step". Returns the file's path.
std::string write_optimizer_shard(const std::string& dir, Backend& be, const OptimizerState& local,
                                  const std::vector<LocalSlice>& slices, int64_t num_params, int rank, int world);

// Fills every state of `local` (shaped like the store's local buffers) at its slices from dir's
// optimizer files of either layout, reading only the overlapping byte ranges of each memory-mapped
// file, and sets local.steps. Errors name the file and what is wrong: neither layout present, a
// rank file missing, the ranks' files not covering every parameter exactly once, a state missing
// or of another dtype or size, steps that differ between the files.
void load_optimizer_state(const std::string& dir, Backend& be, int64_t num_params,
                          const std::vector<LocalSlice>& slices, OptimizerState& local);

}  // namespace sft
