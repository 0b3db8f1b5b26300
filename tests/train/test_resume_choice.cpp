// The resume checkpoint is chosen once and agreed by every rank (train/resume_choice.h), on the
// in-process ThreadWorld of 2 ranks: auto-resume past a damaged checkpoint gives both ranks the
// same older one through one collective; a damaged named one fails on every rank (rank 0 names
// the file and the cause); a fresh start issues no collective.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "dist/comm.h"
#include "io/checkpoint.h"
#include "model/init.h"
#include "train/optimizer.h"
#include "train/resume_choice.h"
#include "../common/tiny_model.h"

namespace sft {

namespace fs = std::filesystem;

namespace {

using test_common::tiny_config;  // tests/common/tiny_model.h

struct RankResult {
  std::string dir, error;
};

// Both ranks call agree_on_resume_checkpoint on their own thread.
std::vector<RankResult> agree(ThreadWorld& tw, const std::string& found, bool named) {
  std::vector<RankResult> out(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      try {
        out[size_t(r)].dir = agree_on_resume_checkpoint(tw.comm(r), found, named);
      } catch (const Error& e) {
        out[size_t(r)].error = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return out;
}

}  // namespace

TEST(ResumeChoice, EveryRankTakesRankZerosVerifiedChoice) {
  const fs::path out = fs::temp_directory_path() / ("sft_resume_choice_" + std::to_string(::getpid()));
  fs::remove_all(out);
  fs::create_directories(out);
  auto be = create_backend("cpu");
  LlamaModel model(tiny_config(), *be);
  init_weights(model, 2);
  AdamW opt(model, {});
  for (int64_t step : {10, 20, 30}) save_checkpoint(out.string(), step, model, opt.state(), {{"global_step", step}}, {});
  const std::string newest = (out / "checkpoint-30").string();
  fs::resize_file(out / "checkpoint-30" / "model.safetensors", 100);

  {
    ThreadWorld tw(2);
    const auto r = agree(tw, newest, false);
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(r[size_t(i)].error, "") << "rank " << i;
      EXPECT_EQ(r[size_t(i)].dir, (out / "checkpoint-20").string()) << "rank " << i;
    }
    EXPECT_EQ(tw.log(0).size(), 1u);
    EXPECT_EQ(tw.log(0), tw.log(1));
  }
  {
    ThreadWorld tw(2);
    const auto r = agree(tw, newest, true);
    EXPECT_NE(r[0].error.find("--resume_from_checkpoint " + newest + " is damaged and was not loaded: model.safetensors: "
                              "100 bytes"), std::string::npos) << r[0].error;
    EXPECT_NE(r[1].error.find("rank 0 found no checkpoint to resume from that verifies"), std::string::npos) << r[1].error;
  }
  {
    ThreadWorld tw(2);
    const auto r = agree(tw, "", false);
    EXPECT_EQ(r[0].dir, "");
    EXPECT_EQ(r[1].dir, "");
    EXPECT_TRUE(tw.log(0).empty());
  }
  fs::remove_all(out);
}

}  // namespace sft
