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

TEST(ConsoleProgress, LineHasEveryField) {
  TrainMetrics m{.step = 12, .total_steps = 300, .epoch = 0.12, .loss = 2.3456, .lr = 1.2e-5, .grad_norm = 0.87,
                 .tokens = 0, .tokens_per_s = 1520, .mfu = 0.213, .eta_s = 252};
  EXPECT_EQ(format_progress(m),
            "step 12/300 | epoch 0.12 | loss 2.3456 | lr 1.20e-05 | grad 0.870 | 1520 tok/s | MFU 21.3% | ETA 4m12s");
  EXPECT_EQ(format_duration(3725), "1h02m");
  EXPECT_EQ(format_duration(7), "7s");
}

}  // namespace sft
