// Trainer checkpoints: output_dir/checkpoint-<step>/ holds the HF model files (fp32 master
// weights, so resume is exact), optimizer.safetensors (AdamW moments), trainer_state.json (step,
// schedule, RNG, data-loader position, log history, as the trainer fills it) and copied extra
// files (tokenizer). It is written as .tmp-checkpoint-<step>/, every file fsynced, a manifest
// written last, then renamed and the parent fsynced: a directory without its manifest is
// incomplete and never picked for resume (ecosystem.md §4.1).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "model/llama.h"

namespace sft {

constexpr const char* kCheckpointManifest = "checkpoint_complete.json";

struct CheckpointFiles {
  std::string source_dir;                // where extra_files are copied from
  std::vector<std::string> extra_files;  // e.g. tokenizer files, generation_config.json
};

// The optimizer's part of a checkpoint: its named state tensors over the parameters this process
// holds (AdamW: "exp_avg", "exp_avg_sq", the ParamStore's states) and its step count.
struct OptimizerState {
  std::vector<std::pair<std::string, Tensor>> tensors;
  int64_t steps = 0;
};

// Returns the final checkpoint directory.
std::string save_checkpoint(const std::string& output_dir, int64_t step, LlamaModel& model,
                            const OptimizerState& optimizer, const nlohmann::json& trainer_state,
                            const CheckpointFiles& files);

// The complete checkpoint with the highest step in output_dir, if any.
std::optional<std::string> find_latest_checkpoint(const std::string& output_dir);
bool is_complete_checkpoint(const std::string& dir);

// Restores weights, every optimizer state tensor (by name) and optimizer.steps; returns
// trainer_state.json. Errors name the file.
nlohmann::json load_checkpoint(const std::string& dir, LlamaModel& model, OptimizerState& optimizer);

// Deletes the oldest complete checkpoints beyond keep (0 = keep all), never `protect`; also
// removes leftover .tmp-checkpoint-* directories of crashed saves.
void rotate_checkpoints(const std::string& output_dir, int64_t keep, const std::string& protect);

// fsync of a file or directory by path (Error on failure).
void fsync_path(const std::string& path);

}  // namespace sft
