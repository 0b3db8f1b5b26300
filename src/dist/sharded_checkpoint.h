// Checkpoints and the final model under data parallelism, whatever the store. One process and
// no_shard (every rank holds the whole state): rank 0 writes the one-process checkpoint. Sharded
// stores: every rank writes its own optimizer shard (optimizer-rank-XXXXX-of-YYYYY.safetensors,
// io/optimizer_files.h; under hybrid modes only the first node's ranks, whose shards every node
// repeats) while rank 0 writes the HF model unit by unit as the other ranks gather each unit with
// it; rank 0 never holds more than one gathered unit beyond its shards. Resume needs
// nothing from here: load_checkpoint (io/checkpoint.h) re-slices either layout for any store.
#pragma once
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "dist/comm.h"
#include "io/checkpoint.h"
#include "model/llama.h"

namespace sft {

// Every rank calls it with its own optimizer state (shaped like its store's local buffers). The
// checkpoint is complete only when every rank's part is written, fsynced and digested: then rank 0
// writes the manifest last and renames .tmp-checkpoint-<step>/ to checkpoint-<step>/. A rank that
// fails to write its part makes every rank fail with an Error naming it (rank 0 removes the
// temporary directory). Returns the final directory on rank 0, "" on the others; trainer_state is
// used on rank 0 only.
std::string save_checkpoint_any(const std::string& output_dir, int64_t step, LlamaModel& model, Comm& comm,
                                const OptimizerState& local, const nlohmann::json& trainer_state,
                                const CheckpointFiles& files);

// Every rank calls it; write runs on rank 0 and may acquire any unit of the model (the final HF
// save): with a sharded store the other ranks take part in the gathers it needs, one unit at a time.
void write_on_rank0(LlamaModel& model, Comm& comm, const std::function<void()>& write);

}  // namespace sft
