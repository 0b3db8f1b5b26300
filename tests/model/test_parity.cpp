// Whole-model parity against HF Transformers, the project's primary correctness test (after llm.c's
// test_gpt2): tools/make_reference.py writes tiny random Llama/Qwen2/Mistral models, a packed + padded batch,
// and HF's logits, loss, every gradient and 10 torch.optim.AdamW step losses; each case is loaded
// into LlamaModel on the CPU backend and compared in fp32 and in bf16-GEMM mode. Also: recompute
// is bit-exact, and the comparator fails on a perturbed model (it is not vacuous).
#include "parity_fixture.h"

namespace sft {
namespace {

using namespace parity;

// ---- tests ------------------------------------------------------------------------------------

class Parity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const Fixtures& fx = fixtures();
    if (!fx.skip_reason.empty()) GTEST_SKIP() << fx.skip_reason;
    ASSERT_TRUE(fx.error.empty()) << fx.error;
    std::printf("---- case %s\n", GetParam().c_str());
    c_ = std::make_unique<Case>(GetParam());
  }
  std::unique_ptr<Case> c_;
};

TEST_P(Parity, Fp32LogitsLossGrads) {
  auto be = create_backend("cpu");
  auto model = c_->load(*be);
  const Result r = check_model(*model, *c_, kFp32);
  std::printf("fp32 %s: logits %.2e loss %.2e grads %.2e (%s)\n", c_->name.c_str(), r.logits, r.loss,
              r.grads, r.worst_grad.c_str());
  EXPECT_EQ(r.failures, 0) << "see the NOT OK lines above";
}

// The LM head + cross-entropy run in chunks of head_chunk rows; 13 divides nothing here.
TEST_P(Parity, Fp32SmallHeadChunk) {
  auto be = create_backend("cpu");
  auto model = c_->load(*be, ModelOptions{.head_chunk = 13});
  EXPECT_EQ(check_model(*model, *c_, kFp32).failures, 0) << "see the NOT OK lines above";
}

// Gradient accumulation across micro-batches (design §4: the global token mean over the step):
// each row as its own batch, forward_backward with 1 / (targets of both) and no zero_grad between,
// must give the reference gradients of the whole batch.
TEST_P(Parity, MicroBatchAccumulation) {
  auto be = create_backend("cpu");
  auto model = c_->load(*be);
  const float scale = float(1.0 / double(c_->num_targets));
  model->zero_grad();
  double loss_sum = 0;
  for (int64_t r = 0; r < c_->batch.B; ++r) loss_sum += model->forward_backward(row_batch(c_->batch, r), scale);
  const float loss = float(loss_sum / double(c_->num_targets)), ref_loss = c_->tensor("loss").at(0);
  int failures = !report("loss (micro-batches)", compare(&loss, &ref_loss, 1), kFp32.loss);
  failures += compare_grads(*model, *c_, kFp32.grads);
  EXPECT_EQ(failures, 0) << "see the NOT OK lines above";
}

TEST_P(Parity, RecomputeIsBitExact) {
  auto be = create_backend("cpu");
  auto model = c_->load(*be);
  const float scale = float(1.0 / double(c_->num_targets));
  model->zero_grad();
  const double loss_plain = model->forward_backward(c_->batch, scale);
  const Tensor g = model->grads_flat();
  std::vector<float> plain(g.f32(), g.f32() + g.numel());
  model->set_recompute(true);
  model->zero_grad();
  const double loss_recompute = model->forward_backward(c_->batch, scale);
  EXPECT_EQ(loss_plain, loss_recompute);
  size_t mismatches = 0;
  for (int64_t i = 0; i < g.numel(); ++i) mismatches += std::memcmp(&plain[size_t(i)], g.f32() + i, 4) != 0;
  EXPECT_EQ(mismatches, 0u) << "gradients with recompute differ from those without (bitwise)";
  // A model built with recompute from the start gives the same bits too.
  auto model2 = c_->load(*be, ModelOptions{.recompute = true});
  model2->zero_grad();
  model2->forward_backward(c_->batch, scale);
  EXPECT_EQ(std::memcmp(plain.data(), model2->grads_flat().f32(), plain.size() * 4), 0);
}

TEST_P(Parity, Bf16MatmulsWithinTolerance) {
  auto be = create_backend("cpu");
  be->set_matmul_dtype(DType::bf16);
  auto model = c_->load(*be);
  const Result r = check_model(*model, *c_, kBf16);
  std::printf("bf16 %s: logits %.2e loss %.2e grads %.2e (%s)\n", c_->name.c_str(), r.logits, r.loss,
              r.grads, r.worst_grad.c_str());
  EXPECT_EQ(r.failures, 0) << "see the NOT OK lines above";
  // bf16 mode must actually round: exact fp32 agreement would mean it is silently fp32.
  EXPECT_GT(r.logits, 1e-5) << "bf16 matmul mode gives fp32 results";
}

TEST_P(Parity, AdamW10StepsFp32) {
  auto be = create_backend("cpu");
  auto model = c_->load(*be);
  double worst = 0;
  const int failures =
      report_adamw(adamw_losses(*model, *c_), c_->tensor("adamw_losses"), kFp32.adamw_loss, &worst);
  std::printf("adamw fp32 %s: worst step loss rel err %.2e\n", c_->name.c_str(), worst);
  EXPECT_EQ(failures, 0);
}

// Weights change every step: a backend that kept stale bf16 weight copies would fail here.
TEST_P(Parity, AdamW10StepsBf16) {
  auto be = create_backend("cpu");
  be->set_matmul_dtype(DType::bf16);
  auto model = c_->load(*be);
  double worst = 0;
  const int failures =
      report_adamw(adamw_losses(*model, *c_), c_->tensor("adamw_losses"), kBf16.adamw_loss, &worst);
  std::printf("adamw bf16 %s: worst step loss rel err %.2e\n", c_->name.c_str(), worst);
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(HF, Parity, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

// Mistral's sliding window (24 in mistral_window) is kept as a limit: the parity cases above show
// sequences of up to 24 tokens match HF's MistralForCausalLM; a batch whose first two packed
// samples (14 + 12 tokens) are merged into one 26-token sequence is refused, in both passes.
TEST(MistralWindow, LongerSequenceIsRefused) {
  const Fixtures& fx = fixtures();
  if (!fx.skip_reason.empty()) GTEST_SKIP() << fx.skip_reason;
  ASSERT_TRUE(fx.error.empty()) << fx.error;
  const Case c("mistral_window");
  auto be = create_backend("cpu");
  auto model = c.load(*be);
  EXPECT_EQ(model->config().sliding_window, 24);
  Batch merged = c.batch;
  ASSERT_EQ(merged.cu_seqlens[1], 14);
  merged.cu_seqlens.erase(merged.cu_seqlens.begin() + 1);
  const std::string want = "a sequence of 26 tokens is longer than the model's sliding_window 24";
  for (bool backward : {false, true}) {
    try {
      if (backward) model->forward_backward(merged, 1.0f);
      else model->forward(merged);
      ADD_FAILURE() << "a 26-token sequence passed a 24-token window (backward " << backward << ")";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(model->forward(c.batch));  // the batch as generated: every sequence <= 24
}

// The comparator is not vacuous: after loading, scale one RMSNorm weight by (1 + 1e-3) (a 0.1%
// error, far below what a wrong op produces) and the fp32 comparison must report mismatches, in
// the logits (measured 1.1e-3) and in gradients (all 22 fail); a single norm-weight element off by
// 1e-3 (logits 2.3e-4) and one perturbed matmul element must be caught as well.
TEST(ParityNegative, ComparatorIsNotVacuous) {
  const Fixtures& fx = fixtures();
  if (!fx.skip_reason.empty()) GTEST_SKIP() << fx.skip_reason;
  ASSERT_TRUE(fx.error.empty()) << fx.error;
  const Case c("mha_untied");
  auto be = create_backend("cpu");
  {
    auto model = c.load(*be);
    Tensor w = model->weights().layers[0].attn_norm;
    for (int64_t i = 0; i < w.numel(); ++i) w.f32()[i] *= 1.0f + 1e-3f;
    std::printf("---- expected NOT OK: layers.0.input_layernorm.weight scaled by 1.001\n");
    const Result r = check_model(*model, c, kFp32);
    EXPECT_GT(r.logits, kFp32.logits) << "a 0.1% norm-weight error went unnoticed in the logits";
    EXPECT_GT(r.grads, kFp32.grads) << "a 0.1% norm-weight error went unnoticed in the gradients";
    EXPECT_GT(r.failures, 2);
  }
  {
    auto model = c.load(*be);
    model->weights().final_norm.f32()[7] += 1e-3f;  // one element of a ~1.0 weight
    std::printf("---- expected NOT OK: one element of model.norm.weight += 1e-3\n");
    const Result r = check_model(*model, c, kFp32);
    EXPECT_GT(r.logits, kFp32.logits) << "a 1e-3 change of one norm weight element went unnoticed";
  }
  {
    auto model = c.load(*be);
    model->weights().layers[1].wdown.f32()[5] += 0.01f;  // weights are N(0, 0.02)
    std::printf("---- expected NOT OK: one element of layers.1.mlp.down_proj.weight += 0.01\n");
    const Result r = check_model(*model, c, kFp32);
    EXPECT_GT(r.failures, 0) << "one perturbed weight element went unnoticed";
  }
  // And the metric itself: a 1e-3 relative error on one element of a large tensor is caught.
  std::vector<float> a(1000, 1.0f), b = a;
  a[999] = 1.001f;
  EXPECT_NEAR(compare(a.data(), b.data(), a.size()).rel(), 1e-3, 1e-6);
  EXPECT_FALSE(report("synthetic", compare(a.data(), b.data(), a.size()), 1e-4));
}

}  // namespace
}  // namespace sft
