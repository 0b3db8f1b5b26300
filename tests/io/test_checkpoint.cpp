// Trainer checkpoints: a save/load round trip restores weights, AdamW moments and step bit for
// bit; directories without the manifest (a crashed save) are never picked; rotation keeps the
// newest N and never the protected one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "model/init.h"
#include "train/optimizer.h"
#include "../common/tiny_model.h"

namespace sft {

namespace fs = std::filesystem;

namespace {

using test_common::tiny_config;  // tests/common/tiny_model.h

Batch small_batch() {
  Batch b;
  b.B = 1;
  b.T = 6;
  b.tokens = {1, 4, 9, 16, 25, 36};
  b.targets = {4, 9, 16, 25, 36, -100};
  b.positions = {0, 1, 2, 3, 4, 5};
  b.cu_seqlens = {0, 6};
  return b;
}

bool same_bytes(const Tensor& a, const Tensor& b) { return std::memcmp(a.data, b.data, a.nbytes()) == 0; }

}  // namespace

TEST(Checkpoint, RoundTripIsBitExact) {
  const fs::path out = fs::temp_directory_path() / ("sft_ckpt_" + std::to_string(::getpid()));
  fs::remove_all(out);
  fs::create_directories(out);
  auto be = create_backend("cpu");
  LlamaModel model(tiny_config(), *be);
  init_weights(model, 1);
  AdamW opt(model, {0.9f, 0.999f, 1e-8f, 0.1f});
  for (int s = 0; s < 2; ++s) {
    model.zero_grad();
    model.forward_backward(small_batch(), 0.2f);
    opt.step(1e-2f);
  }
  std::ofstream(out / "tok.txt") << "tokenizer stand-in";
  const std::string dir = save_checkpoint(out.string(), 2, model, opt.state(), {{"global_step", 2}}, {out.string(), {"tok.txt"}});
  EXPECT_EQ(fs::path(dir).filename(), "checkpoint-2");
  EXPECT_TRUE(fs::exists(fs::path(dir) / "tok.txt"));
  EXPECT_TRUE(fs::exists(fs::path(dir) / "config.json"));

  LlamaModel restored(tiny_config(), *be);
  AdamW restored_opt(restored, {0.9f, 0.999f, 1e-8f, 0.1f});
  OptimizerState restored_state = restored_opt.state();
  nlohmann::json state = load_checkpoint(dir, restored, restored_state);
  restored_opt.set_steps_taken(restored_state.steps);
  EXPECT_EQ(state["global_step"], 2);
  EXPECT_TRUE(same_bytes(model.params_flat(), restored.params_flat()));
  EXPECT_TRUE(same_bytes(opt.m(), restored_opt.m()));
  EXPECT_TRUE(same_bytes(opt.v(), restored_opt.v()));
  EXPECT_EQ(restored_opt.steps_taken(), 2);
  // One more identical step on both stays identical.
  for (auto* m : {&model, &restored}) {
    m->zero_grad();
    m->forward_backward(small_batch(), 0.2f);
  }
  opt.step(1e-2f);
  restored_opt.step(1e-2f);
  EXPECT_TRUE(same_bytes(model.params_flat(), restored.params_flat()));
  fs::remove_all(out);
}

// Values inside a checkpoint that do not parse are an sft::Error naming the file and the value,
// not a bare std::invalid_argument or nlohmann exception.
TEST(Checkpoint, ABadOptimizerStepCountIsANamedError) {
  const fs::path out = fs::temp_directory_path() / ("sft_ckpt_step_" + std::to_string(::getpid()));
  fs::remove_all(out);
  fs::create_directories(out);
  auto be = create_backend("cpu");
  LlamaModel model(tiny_config(), *be);
  init_weights(model, 1);
  AdamW opt(model, {0.9f, 0.999f, 1e-8f, 0.1f});
  const std::string dir = save_checkpoint(out.string(), 7, model, opt.state(), {{"global_step", 7}}, {});
  const fs::path f = fs::path(dir) / "optimizer.safetensors";
  std::string bytes;
  {
    std::ifstream in(f, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const size_t key = bytes.find("\"step\"");
  ASSERT_NE(key, std::string::npos);
  const size_t digit = bytes.find_first_of("0123456789", key);
  ASSERT_NE(digit, std::string::npos);
  bytes[digit] = 'x';  // "step": "x" (header length unchanged)
  std::ofstream(f, std::ios::binary | std::ios::trunc) << bytes;
  OptimizerState st = opt.state();
  try {
    load_checkpoint(dir, model, st);
    FAIL() << "a step count of 'x' was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metadata 'step' is 'x'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("optimizer.safetensors"), std::string::npos) << e.what();
  }
  fs::remove_all(out);
}

TEST(Checkpoint, IncompleteOnesAreIgnoredAndRotationKeepsNewest) {
  const fs::path out = fs::temp_directory_path() / ("sft_ckpt_rot_" + std::to_string(::getpid()));
  fs::remove_all(out);
  fs::create_directories(out);
  auto be = create_backend("cpu");
  LlamaModel model(tiny_config(), *be);
  AdamW opt(model, {});
  for (int step : {10, 20, 30}) save_checkpoint(out.string(), step, model, opt.state(), {{"global_step", step}}, {});
  // A crashed save: a higher step without a manifest, and a leftover temporary directory.
  fs::create_directories(out / "checkpoint-40");
  std::ofstream(out / "checkpoint-40" / "config.json") << "{}";
  fs::create_directories(out / ".tmp-checkpoint-50");
  EXPECT_EQ(fs::path(*find_latest_checkpoint(out.string())).filename(), "checkpoint-30");
  OptimizerState st = opt.state();
  EXPECT_THROW(load_checkpoint((out / "checkpoint-40").string(), model, st), Error);

  rotate_checkpoints(out.string(), 2, (out / "checkpoint-10").string());  // 10 is protected
  EXPECT_TRUE(fs::exists(out / "checkpoint-10"));
  EXPECT_FALSE(fs::exists(out / "checkpoint-20"));
  EXPECT_TRUE(fs::exists(out / "checkpoint-30"));
  EXPECT_FALSE(fs::exists(out / ".tmp-checkpoint-50"));
  EXPECT_FALSE(find_latest_checkpoint((out / "nothing-here").string()).has_value());
  fs::remove_all(out);
}

}  // namespace sft
