// metrics.jsonl lines parse back with the promised keys (NaN written as null, appended across
// writers as a resumed run does) and the progress line carries every field.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "train/metrics_log.h"

namespace sft {

TEST(MetricsJsonl, LinesParseBackAndAppend) {
  const auto path = std::filesystem::temp_directory_path() / ("sft_metrics_" + std::to_string(::getpid()) + ".jsonl");
  std::filesystem::remove(path);
  TrainMetrics m{.step = 3, .total_steps = 10, .epoch = 0.3, .loss = 2.5, .lr = 1e-5, .grad_norm = 0.75,
                 .tokens = 1234, .tokens_per_s = 900.0};
  { MetricsJsonl w(path.string()); w.write(m.to_json()); m.loss = NAN; w.write(m.to_json()); }
  { MetricsJsonl w(path.string()); w.write({{"step", 5}, {"eval_loss", 1.5}, {"eval_ppl", std::exp(1.5)}}); }
  std::ifstream f(path);
  std::string line;
  std::vector<nlohmann::json> lines;
  while (std::getline(f, line)) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 3u);
  for (const char* k : {"step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s"})
    EXPECT_TRUE(lines[0].contains(k)) << k;
  EXPECT_EQ(lines[0]["step"], 3);
  EXPECT_DOUBLE_EQ(lines[0]["loss"].get<double>(), 2.5);
  EXPECT_TRUE(lines[1]["loss"].is_null());
  EXPECT_DOUBLE_EQ(lines[2]["eval_loss"].get<double>(), 1.5);
  std::filesystem::remove(path);
}

// A resumed run cuts the file back to its checkpoint's step before appending (killed at step 4
// after a checkpoint at 2: the lines read 1, 2, 3, 4 and not 1, 2, 3, 4, 3, 4), torn lines go too.
TEST(MetricsJsonl, AResumedRunCutsTheFileBackToItsCheckpoint) {
  const auto path = std::filesystem::temp_directory_path() / ("sft_metrics_cut_" + std::to_string(::getpid()) + ".jsonl");
  std::filesystem::remove(path);
  {
    MetricsJsonl w(path.string());
    for (int s = 1; s <= 4; ++s) w.write({{"step", s}, {"loss", 1.0 / s}});
    w.write({{"step", 4}, {"eval_loss", 0.5}});
  }
  std::ofstream(path, std::ios::app) << R"({"step": 5, "lo)";  // killed mid-line
  {
    MetricsJsonl w(path.string(), 2);
    for (int s = 3; s <= 4; ++s) w.write({{"step", s}, {"loss", 2.0 / s}});
  }
  std::ifstream f(path);
  std::vector<int64_t> steps;
  for (std::string line; std::getline(f, line);) steps.push_back(nlohmann::json::parse(line)["step"].get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));
  { MetricsJsonl w(path.string(), 0); }  // a fresh run in the same directory starts an empty file
  EXPECT_EQ(std::filesystem::file_size(path), 0u);
  std::filesystem::remove(path);
}

TEST(ConsoleProgress, LineHasEveryField) {
  TrainMetrics m{.step = 12, .total_steps = 300, .epoch = 0.12, .loss = 2.3456, .lr = 1.2e-5, .grad_norm = 0.87,
                 .tokens = 0, .tokens_per_s = 1520, .mfu = 0.213, .eta_s = 252};
  EXPECT_EQ(format_progress(m),
            "step 12/300 | epoch 0.12 | loss 2.3456 | lr 1.20e-05 | grad 0.870 | 1520 tok/s | MFU 21.3% | ETA 4m12s");
  EXPECT_EQ(format_duration(3725), "1h02m");
  EXPECT_EQ(format_duration(7), "7s");
}

}  // namespace sft
