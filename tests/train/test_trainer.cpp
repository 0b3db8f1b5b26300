// The training loop on a synthetic task (fixed question -> answer token sequences, loss on the
// answers only): it learns (eval loss below 0.05, greedy generation reproduces every answer),
// resume from a checkpoint is exact (per-step losses and final weights bit-identical to an
// uninterrupted run), and non-finite losses skip updates until --max_bad_steps stops the run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <random>

#include "backend/backend.h"
#include "model/generate.h"
#include "model/init.h"
#include "train/trainer.h"

namespace sft {

namespace fs = std::filesystem;

namespace {

constexpr int32_t kEos = 2, kSep = 3;

// Pair i: question [4 + i, 20 + i, 40 + (i * 7) % 16] SEP, answer [60 + (i*3) % 8, 70 + i, 80 + (5*i) % 8] EOS.
std::vector<int32_t> question(int i) { return {4 + i, 20 + i, 40 + (i * 7) % 16, kSep}; }
std::vector<int32_t> answer(int i) { return {60 + (i * 3) % 8, 70 + i, 80 + (5 * i) % 8, kEos}; }

// One packed row of the given pairs, targets on the answer tokens only.
Batch pack(const std::vector<int>& pairs) {
  Batch b;
  b.B = 1;
  for (int i : pairs) {
    b.cu_seqlens.push_back(int32_t(b.tokens.size()));
    std::vector<int32_t> q = question(i), a = answer(i), seq = q;
    seq.insert(seq.end(), a.begin(), a.end());
    for (size_t t = 0; t < seq.size(); ++t) {
      b.tokens.push_back(seq[t]);
      b.positions.push_back(int32_t(t));
      // position t predicts seq[t+1]; train where the next token is part of the answer
      b.targets.push_back(t + 1 < seq.size() && t + 1 >= q.size() ? seq[t + 1] : -100);
    }
  }
  b.cu_seqlens.push_back(int32_t(b.tokens.size()));
  b.T = int64_t(b.tokens.size());
  return b;
}

// 8 pairs, 2 per micro-batch, reshuffled every epoch from the seed.
class PairStream final : public BatchStream {
 public:
  explicit PairStream(uint64_t seed) : seed_(seed) {}
  Batch next() override {
    if (cursor_ == 4) {
      ++epoch_;
      cursor_ = 0;
    }
    std::vector<int> order(8);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(seed_ + uint64_t(epoch_)));
    Batch b = pack({order[size_t(2 * cursor_)], order[size_t(2 * cursor_ + 1)]});
    ++cursor_;
    return b;
  }
  int64_t batches_per_epoch() const override { return 4; }
  double epoch() const override { return double(epoch_) + double(cursor_) / 4.0; }
  nlohmann::json state() const override { return {{"epoch", epoch_}, {"cursor", cursor_}}; }
  void restore(const nlohmann::json& s) override {
    epoch_ = s.at("epoch");
    cursor_ = s.at("cursor");
  }

 private:
  uint64_t seed_;
  int64_t epoch_ = 0, cursor_ = 0;
};

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = 96;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.eos_token_ids = {kEos};
  return c;
}

TrainConfig base_config(const fs::path& out) {
  TrainConfig c;
  c.output_dir = out.string();
  c.learning_rate = 3e-3;
  c.lr_scheduler_type = ScheduleKind::cosine;
  c.warmup_ratio = 0.05;
  c.weight_decay = 0.01;
  c.gradient_accumulation_steps = 2;
  c.logging_steps = 5;
  c.save_strategy = IntervalStrategy::no;
  c.report_to = ReportTo::none;
  c.model_max_length = 16;
  return c;
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("sft_trainer_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

}  // namespace

TEST(Trainer, LearnsQuestionAnswerPairs) {
  auto be = create_backend("cpu");
  LlamaModel model(tiny_config(), *be);
  init_weights(model, 7);
  const fs::path out = temp_dir("learn");
  TrainConfig cfg = base_config(out);
  cfg.max_steps = 150;
  cfg.evaluation_strategy = IntervalStrategy::steps;
  cfg.eval_steps = 50;
  const std::vector<Batch> eval = {pack({0, 1, 2, 3}), pack({4, 5, 6, 7})};
  PairStream stream(1);
  TrainResult r = train(cfg, model, {&stream, &eval, {}, ""});
  EXPECT_EQ(r.steps, 150);
  const EvalResult e = evaluate(model, eval);
  EXPECT_LT(e.loss, 0.05) << "eval loss after 150 steps";
  EXPECT_LT(r.step_losses.back(), r.step_losses.front() / 20);
  Generator gen(model, 32);
  for (int i = 0; i < 8; ++i) {
    gen.reset();
    EXPECT_EQ(gen.generate(question(i), {kEos}, SamplingParams{.temperature = 0.0, .max_new_tokens = 8}), answer(i))
        << "pair " << i;
  }
  // The output directory is an HF model directory with the logs beside it.
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json", "trainer_state.json",
                        "metrics.jsonl", "loss.svg"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  fs::remove_all(out);
}

TEST(Trainer, ResumeIsBitExact) {
  auto be = create_backend("cpu");
  const fs::path a = temp_dir("straight"), b = temp_dir("resumed");
  TrainConfig cfg = base_config(a);
  cfg.max_steps = 12;
  cfg.save_strategy = IntervalStrategy::steps;
  cfg.save_steps = 6;
  LlamaModel straight(tiny_config(), *be);
  init_weights(straight, 3);
  PairStream s1(5);
  TrainResult full = train(cfg, straight, {&s1, nullptr, {}, ""});
  ASSERT_TRUE(fs::exists(a / "checkpoint-6"));

  // A second run resumes from the step-6 checkpoint of the first into a fresh model.
  cfg.output_dir = b.string();
  LlamaModel resumed(tiny_config(), *be);
  init_weights(resumed, 999);  // overwritten by the checkpoint
  PairStream s2(5);
  TrainResult rest = train(cfg, resumed, {&s2, nullptr, {}, (a / "checkpoint-6").string()});
  ASSERT_EQ(rest.step_losses.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(rest.step_losses[i], full.step_losses[6 + i]) << "step " << 7 + i;
  EXPECT_EQ(std::memcmp(straight.params_flat().data, resumed.params_flat().data, straight.params_flat().nbytes()), 0);
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(Trainer, NonFiniteStepsAreSkippedThenFatal) {
  auto be = create_backend("cpu");
  LlamaModel model(tiny_config(), *be);
  init_weights(model, 3);
  model.weights().final_norm.f32()[0] = NAN;  // every loss is NaN from here on
  const fs::path out = temp_dir("nan");
  TrainConfig cfg = base_config(out);
  cfg.max_steps = 20;
  cfg.max_bad_steps = 3;
  PairStream stream(1);
  try {
    train(cfg, model, {&stream, nullptr, {}, ""});
    FAIL() << "expected the run to stop";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 consecutive steps with a non-finite loss"), std::string::npos) << e.what();
  }
  // the skipped steps are in metrics.jsonl
  std::ifstream f(out / "metrics.jsonl");
  std::string all((std::istreambuf_iterator<char>(f)), {});
  EXPECT_NE(all.find("\"skipped\":true"), std::string::npos);
  fs::remove_all(out);
}

}  // namespace sft
