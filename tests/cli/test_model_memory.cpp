// `sft init` and `sft generate` state the memory the model will take and check it against free
// memory before allocating: a config far larger than the machine (but inside the config parser's
// bound) fails at once with what it needs and what is available, never an allocator abort.
#include <gtest/gtest.h>

#include <chrono>
#include <regex>

#include "cli_test_util.h"
#include "model/llama_config.h"
#include "train/memory_check.h"

using namespace cli_test;

namespace {

// About 200 billion parameters (1.6 TB of fp32 weights and gradients): every dimension below
// 2^31 and the parameter count below 2^42, so config.json parses; no test machine has the memory.
const char* kHugeConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 64, "num_attention_heads": 128,
  "num_key_value_heads": 8, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "vocab_size": 2000000, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2,
  "torch_dtype": "bfloat16"})";

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The machine would need more than this config's weights to run it: skip there.
bool machine_too_big(const fs::path& config) {
  const sft::MemoryPlan plan = sft::plan_model_memory(sft::load_llama_config(config.string()), 0);
  const int64_t available = sft::available_memory_bytes();
  return available < 0 || available >= plan.total();
}

// "not enough memory: ... needs weights 763.9 GiB, gradient buffer 763.9 GiB = 1.5 TiB, but only
// 21.3 GiB is available"
void expect_memory_error(const CmdResult& r, const std::string& where) {
  EXPECT_EQ(r.code, 1) << r.out;
  static const std::regex needs(R"(not enough memory: .* needs weights [0-9.]+ [GT]iB, gradient buffer [0-9.]+ )"
                                R"([GT]iB.* = [0-9.]+ TiB, but only [0-9.]+ [GM]iB is available)");
  EXPECT_TRUE(std::regex_search(r.out, needs)) << r.out;
  EXPECT_NE(r.out.find("[" + where + "]"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("bad_alloc"), std::string::npos) << r.out;
}

}  // namespace

TEST(ModelMemory, InitOfAModelLargerThanMemoryFailsAtOnceNamingNeedAndAvailable) {
  const fs::path root = temp_dir("init_huge");
  fs::create_directories(root);
  std::ofstream(root / "huge.json") << kHugeConfig;
  if (machine_too_big(root / "huge.json")) GTEST_SKIP() << "this machine has 1.6 TB free or its memory is unknown";
  const auto t0 = std::chrono::steady_clock::now();
  const CmdResult r = run(kSft + " init --preset " + (root / "huge.json").string() + " --tokenizer " + kTokenizer +
                          " --output_dir " + (root / "out").string());
  const double s = seconds_since(t0);
  expect_memory_error(r, "init");
  EXPECT_NE(r.out.find("huge.json"), std::string::npos) << r.out;
  EXPECT_LT(s, 20.0) << r.out;                    // the tokenizer's load, not an allocation
  EXPECT_FALSE(fs::exists(root / "out" / "model.safetensors"));
  fs::remove_all(root);
}

TEST(ModelMemory, GenerateWithAModelLargerThanMemoryFailsBeforeLoadingIt) {
  // config.json and the tokenizer only: the check comes before the weights are looked for.
  const fs::path root = temp_dir("generate_huge"), model = root / "model";
  fs::create_directories(model);
  std::ofstream(model / "config.json") << kHugeConfig;
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    if (fs::exists(fs::path(kTokenizer) / f)) fs::copy_file(fs::path(kTokenizer) / f, model / f);
  if (machine_too_big(model / "config.json")) GTEST_SKIP() << "this machine has 1.6 TB free or its memory is unknown";
  const auto t0 = std::chrono::steady_clock::now();
  const CmdResult r = run(kSft + " generate --model " + model.string() + " --prompt hi --max_new_tokens 8");
  const double s = seconds_since(t0);
  expect_memory_error(r, "generate");
  EXPECT_NE(r.out.find("KV cache and decode buffers for "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("model.safetensors"), std::string::npos) << r.out;  // refused before the weights
  EXPECT_LT(s, 20.0) << r.out;
  fs::remove_all(root);
}

TEST(ModelMemory, InitAndGenerateOfASmallModelStateTheirMemoryAndRun) {
  const fs::path root = temp_dir("small_memory"), model = root / "model";
  CmdResult r = init_small_model(root, model);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(memory: weights [0-9.]+ MiB, gradient buffer [0-9.]+ MiB = )"
                                                  R"([0-9.]+ MiB; ([0-9.]+ GiB available|free memory unknown))")))
      << r.out;
  r = run(kSft + " generate --model " + model.string() + " --prompt hi --temperature 0 --max_new_tokens 4");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(memory: weights [0-9.]+ MiB, gradient buffer [0-9.]+ MiB, )"
                                                  R"(KV cache and decode buffers for [0-9]+ tokens [0-9.]+ MiB = )")))
      << r.out;
  fs::remove_all(root);
}
