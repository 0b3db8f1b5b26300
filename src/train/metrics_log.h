// Metric sinks of the trainer: output_dir/metrics.jsonl (one JSON object per logging step or
// evaluation, flushed per line so a crash loses nothing already logged) and the console: a live
// progress line on a TTY, plain lines otherwise.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace sft {

struct TrainMetrics {
  int64_t step = 0, total_steps = 0;
  double epoch = 0, loss = 0, lr = 0, grad_norm = 0;
  int64_t tokens = 0;        // target tokens seen so far
  double tokens_per_s = 0;   // all tokens (inputs) per second over the last logging window
  double mfu = 0;            // fraction of --peak (0 when unknown)
  double eta_s = 0;
  nlohmann::json to_json() const;
};

class MetricsJsonl {
 public:
  // Appends: a resumed run continues the file, first cut back to its checkpoint's step (lines of
  // the earlier run with step > keep_through_step, and a torn last line, are dropped), so a step
  // is never in the file twice; HF's log_history is cut the same way.
  explicit MetricsJsonl(const std::string& path, int64_t keep_through_step = INT64_MAX);
  ~MetricsJsonl();
  MetricsJsonl(const MetricsJsonl&) = delete;
  MetricsJsonl& operator=(const MetricsJsonl&) = delete;
  void write(const nlohmann::json& line);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// "step 12/300 | epoch 0.12 | loss 2.3456 | lr 1.20e-05 | grad 0.87 | 1520 tok/s | MFU 21.3% | ETA 4m12s"
std::string format_progress(const TrainMetrics& m);
std::string format_duration(double seconds);

class ConsoleProgress {
 public:
  explicit ConsoleProgress(std::FILE* out = stdout);
  void update(const TrainMetrics& m);  // rewrites the line on a TTY, prints a new line otherwise
  void println(const std::string& line);  // a plain line that does not clobber the progress line
  void finish();

 private:
  std::FILE* out_;
  bool tty_;
  bool pending_ = false;
};

}  // namespace sft
