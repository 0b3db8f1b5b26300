// LR schedules against HF transformers' get_scheduler (tools/make_schedule_reference.py, run in
// the test virtualenv), and HF's warmup-steps rule.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "train/schedule.h"

namespace sft {

TEST(Schedule, MatchesHuggingFace) {
  const std::string root = SFT_SOURCE_DIR, python = root + "/.venv/bin/python";
  if (!std::filesystem::exists(python)) GTEST_SKIP() << "no test virtualenv: run scripts/setup_venv.sh";
  FILE* p = popen((python + " " + root + "/tools/make_schedule_reference.py").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  ASSERT_EQ(pclose(p), 0);
  auto cases = nlohmann::json::parse(out);
  ASSERT_GE(cases.size(), 8u);
  for (const auto& c : cases) {
    LrSchedule s{parse_schedule_kind(c["kind"]), c["lr_max"], c["warmup"], c["total"]};
    const auto& lrs = c["lrs"];
    for (size_t k = 0; k < lrs.size(); ++k)
      EXPECT_NEAR(s.lr_at(int64_t(k)), lrs[k].get<double>(), 1e-12)
          << c["kind"] << " total " << c["total"] << " warmup " << c["warmup"] << " step " << k;
  }
}

TEST(Schedule, WarmupStepsRule) {
  EXPECT_EQ(warmup_steps_for(100, 0, 0.03), 3);   // ceil(3.0)
  EXPECT_EQ(warmup_steps_for(101, 0, 0.03), 4);   // ceil(3.03)
  EXPECT_EQ(warmup_steps_for(100, 7, 0.5), 7);    // explicit steps win
  EXPECT_EQ(warmup_steps_for(100, 0, 0.0), 0);
}

TEST(Schedule, UnknownKindIsAClearError) {
  try {
    parse_schedule_kind("cosine_with_restarts_typo");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown schedule 'cosine_with_restarts_typo'"), std::string::npos);
  }
}

}  // namespace sft
