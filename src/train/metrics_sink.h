// MetricsSink: the trainer's one place to report. Each event (a logged training window, an
// evaluation, a skipped step, a message) fans out to every sink that wants it: the console
// progress line, output_dir/metrics.jsonl, TensorBoard events, trainer_state.json's log_history
// and the SVG loss plot. Under data parallelism only rank 0 has a sink that writes.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "train/metrics_log.h"
#include "train/plot.h"
#include "train/tensorboard.h"

namespace sft {

struct EvalMetrics {
  int64_t step = 0;
  double epoch = 0, loss = 0;
  int64_t targets = 0;
};

class MetricsSink {
 public:
  // Writes metrics.jsonl (appending) and, when tensorboard, events under output_dir/runs. A sink
  // that is not the writer (ranks other than 0) keeps the history and writes nothing.
  MetricsSink(const std::string& output_dir, bool tensorboard, int64_t start_step, bool writer = true);
  // A resumed run's log_history (from trainer_state.json): the plot and history continue it.
  void restore_history(const nlohmann::json& history);

  void train(const TrainMetrics& m);
  void eval(const EvalMetrics& m);
  void skipped(int64_t step, const std::string& why, double loss, double grad_norm, int64_t bad_in_a_row);
  void message(const std::string& line);
  void finish_progress();  // ends the live progress line before other output
  // Rewrites the loss plot (output_dir/loss.svg) with everything logged so far.
  void write_plot();
  const nlohmann::json& history() const { return history_; }
  bool has_eval_at(int64_t step) const { return !plot_.eval_loss.empty() && plot_.eval_loss.back().step == step; }

 private:
  std::string output_dir_;
  bool writer_;
  std::unique_ptr<MetricsJsonl> jsonl_;
  std::unique_ptr<TensorBoardWriter> tb_;
  ConsoleProgress console_;
  PlotSeries plot_;
  nlohmann::json history_ = nlohmann::json::array();  // trainer_state.json log_history
};

}  // namespace sft
