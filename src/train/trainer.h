// The training loop of `sft train` (design.md §4, HF Trainer semantics): optimizer steps of
// gradient_accumulation_steps micro-batches, loss normalised per --loss_normalization, NaN/Inf
// steps skipped (fatal after max_bad_steps in a row), global-norm clipping, AdamW with the HF
// schedule, logging (console, metrics.jsonl, TensorBoard, SVG plot), evaluation, atomic
// checkpoints and exact resume. Data arrives through BatchStream, so the loop knows no file format.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "model/llama.h"
#include "train/train_config.h"

namespace sft {

// An endless, deterministic sequence of micro-batches over the training set, epoch after epoch.
class BatchStream {
 public:
  virtual ~BatchStream() = default;
  virtual Batch next() = 0;                      // the next micro-batch (crosses epochs)
  virtual int64_t batches_per_epoch() const = 0;
  virtual double epoch() const = 0;              // completed fraction of epochs so far
  virtual nlohmann::json state() const = 0;      // exact position, for checkpoints
  virtual void restore(const nlohmann::json& state) = 0;
};

struct EvalResult {
  double loss = 0;  // Σ loss / Σ targets over the whole eval set
  int64_t targets = 0;
};

// Loss over every batch (forward only).
EvalResult evaluate(LlamaModel& model, const std::vector<Batch>& batches);

struct TrainerInputs {
  BatchStream* train = nullptr;
  const std::vector<Batch>* eval = nullptr;  // null or empty: no evaluation
  CheckpointFiles files;                     // copied into every checkpoint and the final model
  std::string resume_dir;                    // checkpoint to resume from ("" = fresh)
};

struct TrainResult {
  int64_t steps = 0;
  double final_loss = 0;
  std::vector<double> step_losses;  // per optimizer step, this process only
  std::string final_dir;   // output_dir, or the checkpoint written when interrupted
  int interrupted_by = 0;  // the signal that stopped the run (save_on_interrupt), else 0
};

TrainResult train(const TrainConfig& cfg, LlamaModel& model, TrainerInputs inputs);

}  // namespace sft
