// Generation with a KV cache: cached attention equals the FlashAttention kernel on the same rows,
// prefill + one-token decodes give the logits of a full forward, greedy generation equals HF
// Transformers' generate() on the same model directory, and sampling honours top-p and seeds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "io/hf_model.h"
#include "model/generate.h"
#include "model/init.h"

namespace sft {

namespace {

LlamaConfig small_config() {
  LlamaConfig c;
  c.vocab_size = 97;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-5;
  c.initializer_range = 0.2;  // large enough that the output depends on the input
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

double max_rel_diff(const std::vector<float>& a, const float* b, size_t n) {
  double d = 0, m = 0;
  for (size_t i = 0; i < n; ++i) {
    d = std::max(d, double(std::fabs(a[i] - b[i])));
    m = std::max(m, double(std::fabs(b[i])));
  }
  return d / m;
}

}  // namespace

TEST(Generate, CachedAttentionEqualsFlashAttention) {
  auto be = create_backend("cpu");
  const int NH = 4, NKV = 2, HS = 16, T = 37, QKV = (NH + 2 * NKV) * HS;
  std::mt19937 rng(3);
  std::normal_distribution<float> d;
  std::vector<float> qkv(size_t(T * QKV)), flash(size_t(T * NH * HS)), lse(size_t(T * NH));
  for (auto& x : qkv) x = d(rng);
  std::vector<int32_t> cu = {0, T};
  be->attention_forward(Tensor(flash.data(), DType::f32, {T, NH * HS}), Tensor(lse.data(), DType::f32, {T, NH}),
                        Tensor(qkv.data(), DType::f32, {T, QKV}), SeqLayout{cu.data(), 1, T}, NH, NKV, HS);
  const int start = 20, n = 17;
  std::vector<float> cached(size_t(n * NH * HS));
  be->attention_forward_cached(Tensor(cached.data(), DType::f32, {n, NH * HS}), Tensor(qkv.data(), DType::f32, {T, QKV}),
                               start, n, NH, NKV, HS);
  EXPECT_LT(max_rel_diff(cached, flash.data() + start * NH * HS, cached.size()), 1e-5);
}

TEST(Generate, PrefillAndDecodeMatchFullForward) {
  auto be = create_backend("cpu");
  LlamaModel model(small_config(), *be);
  init_weights(model, 11);
  const std::vector<int32_t> tokens = {1, 5, 17, 42, 8, 77, 3, 64, 29, 30, 31, 90};
  const int64_t N = int64_t(tokens.size()), V = model.config().vocab_size;
  Batch b;
  b.B = 1;
  b.T = N;
  b.tokens = tokens;
  b.targets.assign(size_t(N), -100);
  for (int64_t i = 0; i < N; ++i) b.positions.push_back(int32_t(i));
  b.cu_seqlens = {0, int32_t(N)};
  std::vector<float> full(size_t(N * V));
  model.forward(b, full.data());

  Generator gen(model, 32);
  std::vector<float> logits = gen.feed({tokens.begin(), tokens.begin() + 5});  // prefill 5
  EXPECT_LT(max_rel_diff(logits, full.data() + 4 * V, size_t(V)), 1e-5);
  for (int64_t i = 5; i < N; ++i) {  // then one token at a time
    logits = gen.feed({tokens[size_t(i)]});
    EXPECT_LT(max_rel_diff(logits, full.data() + i * V, size_t(V)), 1e-5) << "position " << i;
  }
  EXPECT_EQ(gen.length(), N);
}

TEST(Generate, GreedyMatchesHuggingFaceGenerate) {
  const std::string root = SFT_SOURCE_DIR, python = root + "/.venv/bin/python";
  if (!std::filesystem::exists(python)) GTEST_SKIP() << "no test virtualenv: run scripts/setup_venv.sh";
  auto be = create_backend("cpu");
  LlamaConfig cfg = small_config();
  LlamaModel model(cfg, *be);
  init_weights(model, 5);
  const auto dir = std::filesystem::temp_directory_path() / ("sft_gen_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  save_hf_model(model, dir.string(), SaveOptions{.dtype = DType::f32});
  const std::vector<int32_t> prompt = {1, 23, 45, 67, 12};
  Generator gen(model, 64);
  SamplingParams greedy{.temperature = 0.0, .max_new_tokens = 20};
  // Stops after eos (2) as HF does; this seed reaches it after 13 tokens, so stopping is covered too.
  const std::vector<int32_t> stop(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end());
  const std::vector<int32_t> ours = gen.generate(prompt, stop, greedy);

  std::string cmd = python + " " + root + "/tools/hf_generate.py " + dir.string() + " 20";
  for (int32_t t : prompt) cmd += " " + std::to_string(t);
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  ASSERT_EQ(pclose(p), 0) << out;
  EXPECT_EQ(nlohmann::json(ours), nlohmann::json::parse(out.substr(out.rfind('['))));
  std::filesystem::remove_all(dir);
}

TEST(Generate, StopsAtStopId) {
  auto be = create_backend("cpu");
  LlamaModel model(small_config(), *be);
  init_weights(model, 11);
  Generator gen(model, 64);
  const std::vector<int32_t> first = gen.generate({1, 2, 3}, {}, SamplingParams{.temperature = 0.0, .max_new_tokens = 10});
  gen.reset();
  // Stopping at the 3rd greedy token: the output ends there, stop id included.
  const std::vector<int32_t> stopped =
      gen.generate({1, 2, 3}, {first[2]}, SamplingParams{.temperature = 0.0, .max_new_tokens = 10});
  const size_t expect = size_t(std::find(first.begin(), first.end(), first[2]) - first.begin()) + 1;
  EXPECT_EQ(stopped.size(), expect);
  EXPECT_EQ(stopped.back(), first[2]);
}

TEST(Sampling, TopPAndSeeds) {
  std::vector<float> logits = {0.0f, 3.0f, 2.9f, -5.0f, 1.0f};
  std::mt19937_64 rng(1);
  EXPECT_EQ(sample_token(logits, 0.0, 1.0, rng), 1);  // greedy
  // With top_p small only the most likely token survives.
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sample_token(logits, 1.0, 0.1, rng), 1);
  // top_p = 0.8 keeps {1, 2} (p ≈ 0.45, 0.41 of the softmax): never token 0, 3 or 4.
  std::array<int, 5> counts{};
  for (int i = 0; i < 2000; ++i) ++counts[size_t(sample_token(logits, 1.0, 0.8, rng))];
  EXPECT_EQ(counts[0] + counts[3] + counts[4], 0);
  EXPECT_GT(counts[1], 800);
  EXPECT_GT(counts[2], 700);
  std::mt19937_64 a(7), b(7);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sample_token(logits, 1.0, 1.0, a), sample_token(logits, 1.0, 1.0, b));
}

}  // namespace sft
