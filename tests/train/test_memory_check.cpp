// The memory check before training: the plan counts exactly the model's parameters, activations
// grow with the micro-batch and shrink with recompute, and check_memory_fits() refuses a plan
// over the available memory with the parts and the right advice (batch, length, recompute; or a
// smaller model when weights and optimizer state alone do not fit).
#include <gtest/gtest.h>

#include <string>

#include "backend/backend.h"
#include "core/check.h"
#include "model/presets.h"
#include "train/memory_check.h"

namespace sft {
namespace {

std::string error_of(const MemoryPlan& p, int64_t available, bool recompute) {
  try {
    check_memory_fits(p, available, 8, 2048, recompute);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(MemoryCheck, PlanMatchesTheModel) {
  const LlamaConfig cfg = get_preset("tiny").config;
  auto be = create_backend("cpu");
  LlamaModel model(cfg, *be);
  const MemoryPlan p = plan_training_memory(cfg, {}, 4096, 2);
  EXPECT_EQ(p.params, model.num_params());
  EXPECT_EQ(p.weights, 4 * model.num_params());
  EXPECT_EQ(p.optimizer, 8 * model.num_params());
  EXPECT_EQ(p.weight_copies, 2 * model.num_params());
  EXPECT_EQ(plan_training_memory(cfg, {}, 4096, 0).weight_copies, 0);
  // Activations: (L+1) residuals of (N, C) at least, more with more tokens, less with recompute.
  const int64_t C = cfg.hidden_size, L = cfg.num_hidden_layers;
  EXPECT_GT(p.activations, (L + 1) * 4096 * C * 4);
  EXPECT_GT(plan_training_memory(cfg, {}, 8192, 2).activations, p.activations);
  EXPECT_LT(plan_training_memory(cfg, {.recompute = true}, 4096, 2).activations, p.activations);
  EXPECT_EQ(p.total(), p.weights + p.grads + p.optimizer + p.weight_copies + p.activations);
}

// With recompute, one more layer costs only its checkpoint (the layer input, (N, C) fp32); without,
// it costs all of its saved activations.
TEST(MemoryCheck, RecomputeGrowsOnlyByTheLayerCheckpoints) {
  LlamaConfig cfg = get_preset("small").config;
  const int64_t N = 2048, C = cfg.hidden_size;
  auto bytes = [&](int64_t layers, bool recompute) {
    LlamaConfig c = cfg;
    c.num_hidden_layers = layers;
    return LlamaModel::activation_bytes(c, {.recompute = recompute}, N);
  };
  EXPECT_EQ(bytes(9, true) - bytes(8, true), N * C * 4);
  EXPECT_EQ(bytes(32, true) - bytes(8, true), 24 * N * C * 4);
  EXPECT_GT(bytes(9, false) - bytes(8, false), 8 * N * C * 4);
}

TEST(MemoryCheck, RefusesWhatDoesNotFitWithAdvice) {
  const MemoryPlan p = plan_training_memory(get_preset("small").config, {}, 16384, 2);
  EXPECT_EQ(error_of(p, p.total(), false), "");
  EXPECT_EQ(error_of(p, -1, false), "");  // unknown free memory: no check
  std::string e = error_of(p, p.total() - 1, false);
  EXPECT_NE(e.find("not enough memory"), std::string::npos) << e;
  EXPECT_NE(e.find("--per_device_train_batch_size (now 8)"), std::string::npos) << e;
  EXPECT_NE(e.find("--model_max_length (now 2048)"), std::string::npos) << e;
  EXPECT_NE(e.find("--gradient_checkpointing True"), std::string::npos) << e;
  e = error_of(p, p.total() - 1, true);  // recompute already on: not suggested again
  EXPECT_EQ(e.find("--gradient_checkpointing"), std::string::npos) << e;
  e = error_of(p, p.weights, false);
  EXPECT_NE(e.find("alone do not fit"), std::string::npos) << e;
}

TEST(MemoryCheck, AvailableMemoryIsKnownOnLinux) {
  const int64_t a = available_memory_bytes();
  EXPECT_GT(a, int64_t(64) << 20);
}

}  // namespace
}  // namespace sft
