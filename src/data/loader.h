// Micro-batches of a Dataset for training: packing (samples concatenated into rows of at most
// max_length tokens, each its own sequence for variable-length attention) or FastChat-style
// right padding; a per-epoch order that is a pure function of (seed, epoch); sharding of rows
// over (rank, world_size); and a position that saves and restores exactly as a small JSON, refused
// when the data (file size and XXH3, template, samples) or options changed, unless ignore_data_skip
// (HF's flag: the saved epoch starts again from its first row).
// Reference: FastChat padding (fastchat-sft.md §1.2); packing as TRL "bfd" (ecosystem.md §2.4).
#pragma once
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "core/batch.h"

namespace sft {

struct LoaderOptions {
  int64_t batch_size = 1;       // rows per micro-batch (per_device_train_batch_size)
  int64_t max_length = 512;     // tokens per row (model_max_length)
  bool packing = true;          // false: one sample per row, right-padded
  bool pad_to_max_length = false;  // padding mode: rows padded to max_length (FastChat) instead of the batch's longest
  bool shuffle = true;
  uint64_t seed = 42;
  int64_t rank = 0, world_size = 1;
  int32_t pad_id = 0;           // see pad_id_for()
  // load_state() starts the saved epoch from its first row instead of the saved row, and a changed
  // data file, template or option is logged instead of refused (HF TrainingArguments.ignore_data_skip).
  bool ignore_data_skip = false;
};

// The padding id: the tokenizer's unk (FastChat: pad = unk), else its pad, else its eos, else 0.
// Padding never reaches the loss (targets -100) nor real tokens (its own sequence), so the choice
// only shows in dumps.
int32_t pad_id_for(const Tokenizer& tok);

// Rows of one epoch: each row lists dataset sample indices. Packing places samples by best-fit
// decreasing length into rows of max_length tokens (ties in shuffled order), then shuffles the
// rows; padding puts one sample per row in shuffled order. Shared by every rank.
std::vector<std::vector<int64_t>> plan_epoch(const Dataset& data, const LoaderOptions& opt, int64_t epoch);

class DataLoader {
 public:
  DataLoader(const Dataset& data, LoaderOptions opt);

  // Micro-batches per epoch: the same on every rank. A rank's last batch may hold fewer rows
  // (even none: B = 0) when the rows do not divide evenly.
  int64_t batches_per_epoch() const;
  int64_t epoch() const { return epoch_; }
  int64_t rows_per_epoch() const { return static_cast<int64_t>(rows_.size()); }
  // Epochs completed so far plus the consumed fraction of the current one: epoch + row / rows,
  // with state()'s "epoch" and "row" (what the trainer logs as "epoch"). O(1): no JSON, no hash.
  double epoch_progress() const;

  // Fills this rank's next micro-batch and returns true, or returns false at the end of an epoch
  // (the next call starts the next epoch).
  bool next(Batch& out);

  // {"epoch", "row": rows of the epoch consumed by all ranks, "rows": the epoch's rows, "seed",
  // "shuffle", "packing", "max_length", "num_samples", "fingerprint" (Dataset::fingerprint),
  // "data_path", "identity": Dataset::identity()}. load_state() checks that the data and options
  // match and names every difference (the file with its old and new size and XXH3, the template,
  // the option); the batch size and world size may change: the row position is global. A state
  // without "identity" (an older sft's) is resumed with that part unchecked, and says so.
  nlohmann::json state() const;
  void load_state(const nlohmann::json& state);

  const LoaderOptions& options() const { return opt_; }

 private:
  void start_epoch(int64_t epoch);

  const Dataset& data_;
  LoaderOptions opt_;
  int64_t epoch_ = -1;
  int64_t row_ = 0;  // first row of the epoch not yet handed out (to any rank)
  std::vector<std::vector<int64_t>> rows_;
};

// Builds a batch from rows of dataset samples: T = max_length when pad_to_max_length, else the
// longest row. targets[t] = label of token t+1 of the same sample; -100 at each sample's last
// token and on padding; positions restart per sample; padding is a sequence of its own.
void fill_batch(const Dataset& data, const std::vector<const std::vector<int64_t>*>& rows, const LoaderOptions& opt,
                Batch& out);

}  // namespace sft
