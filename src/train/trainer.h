// The training loop of `sft train` (design.md §4, HF Trainer semantics): optimizer steps
// (train_step.h) of gradient_accumulation_steps micro-batches, NaN/Inf steps skipped (fatal after
// max_bad_steps in a row), the HF schedule, logging through one MetricsSink, evaluation, atomic
// checkpoints, stop on a signal and exact resume. Data arrives through BatchStream, so the loop
// knows no file format.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/comm.h"
#include "io/checkpoint.h"
#include "model/llama.h"
#include "train/train_config.h"
#include "train/train_step.h"

namespace sft {

// An endless, deterministic sequence of micro-batches over the training set, epoch after epoch.
class BatchStream {
 public:
  virtual ~BatchStream() = default;
  virtual Batch next() = 0;                      // the next micro-batch (crosses epochs)
  virtual int64_t batches_per_epoch() const = 0;
  virtual double epoch() const = 0;              // completed fraction of epochs so far (cheap: once per step)
  virtual nlohmann::json state() const = 0;      // exact position, for checkpoints
  virtual void restore(const nlohmann::json& state) = 0;
};

// Loss over every batch (forward only), in a world of one.
EvalResult evaluate(LlamaModel& model, const std::vector<Batch>& batches);

struct TrainerInputs {
  BatchStream* train = nullptr;
  const std::vector<Batch>* eval = nullptr;  // null or empty: no evaluation
  CheckpointFiles files;                     // copied into every checkpoint and the final model
  std::string resume_dir;                    // checkpoint to resume from ("" = fresh)
};

struct TrainResult {
  int64_t steps = 0;
  double final_loss = 0;            // the loss of the last optimizer step
  double last_logged_loss = 0;      // the last metrics.jsonl loss: the mean over its logging window
  int64_t last_logged_step = 0;
  std::vector<double> step_losses;  // per optimizer step, this process only
  std::string final_dir;   // output_dir, or the checkpoint written when interrupted
  int interrupted_by = 0;  // the signal that stopped the run (save_on_interrupt), else 0
};

// comm: the data-parallel world (null: a world of one). Steps run through train_step().
TrainResult train(const TrainConfig& cfg, LlamaModel& model, TrainerInputs inputs, Comm* comm = nullptr);

}  // namespace sft
