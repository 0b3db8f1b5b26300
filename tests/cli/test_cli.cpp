// End-to-end checks of the sft binary: `sft init` writes a directory that HF Transformers loads
// (tools/hf_load_check.py) and that sft loads back; `sft bench --json` ends with the promised
// JSON keys; bad arguments fail with a clear message and a non-zero exit code.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "cli_test_util.h"
#include "io/hf_model.h"

using namespace cli_test;

TEST(Init, WritesAnHfModelDirectory) {
  const fs::path out = temp_dir("init");
  CmdResult r = run(kSft + " init --preset tiny --tokenizer " + kTokenizer + " --output_dir " + out.string() + " --seed 3");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json", "tokenizer.model",
                        "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;

  // sft loads it back: the config round-trips and the weights are finite.
  auto backend = sft::create_backend("cpu");
  auto model = sft::load_hf_model(out.string(), *backend, {});
  EXPECT_EQ(model->config().vocab_size, 32000);
  EXPECT_EQ(model->config().hidden_size, 288);

  // HF Transformers loads it as a user would.
  if (!fs::exists(kPython)) GTEST_SKIP() << "no test virtualenv: run scripts/setup_venv.sh";
  CmdResult py = run(kPython + " " + kRoot + "/tools/hf_load_check.py " + out.string());
  ASSERT_EQ(py.code, 0) << py.out;
  auto j = nlohmann::json::parse(last_line(py.out));
  EXPECT_EQ(j["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(j["vocab_size"], 32000);
  EXPECT_EQ(j["torch_dtype"], "torch.bfloat16");
  EXPECT_EQ(j["num_params"].get<int64_t>(), model->num_params());
  EXPECT_NEAR(j["q_proj_std"].get<double>(), 0.02, 0.001);  // normal(0, initializer_range)
  EXPECT_NEAR(j["q_proj_mean"].get<double>(), 0.0, 0.001);
  EXPECT_TRUE(j["norms_all_one"].get<bool>());
  EXPECT_TRUE(j["logits_finite"].get<bool>());
  EXPECT_EQ(j["tokenizer_len"], 32000);
  EXPECT_EQ(j["hello_ids"], nlohmann::json::parse("[1, 15043, 3186]"));  // the real LLaMA-2 ids
  fs::remove_all(out);
}

TEST(Init, SameSeedSameWeightsOtherSeedOtherWeights) {
  const fs::path a = temp_dir("seed_a"), b = temp_dir("seed_b"), c = temp_dir("seed_c");
  for (auto& [dir, seed] : {std::pair{a, 5}, {b, 5}, {c, 6}}) {
    CmdResult r = run(kSft + " init --preset tiny --dtype fp32 --tokenizer " + kTokenizer + " --output_dir " +
                dir.string() + " --seed " + std::to_string(seed));
    ASSERT_EQ(r.code, 0) << r.out;
  }
  auto read = [](const fs::path& p) { return read_file(p / "model.safetensors"); };
  EXPECT_EQ(read(a), read(b));
  EXPECT_NE(read(a), read(c));
  for (auto& d : {a, b, c}) fs::remove_all(d);
}

TEST(Init, BadArgumentsFailClearly) {
  CmdResult r = run(kSft + " init --preset huge --tokenizer " + kTokenizer + " --output_dir /tmp/x");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("unknown preset 'huge'"), std::string::npos) << r.out;
  r = run(kSft + " init --preset tiny --tokenizer /nonexistent --output_dir /tmp/x");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("/nonexistent"), std::string::npos) << r.out;
}

TEST(Bench, JsonLastLine) {
  CmdResult r = run(kSft + " bench --preset tiny --dtype fp32 --steps 1 --warmup 0 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(last_line(r.out));
  for (const char* k : {"preset", "dtype", "tokens_per_s", "gflops", "mfu", "peak_rss_mb"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["preset"], "tiny");
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(j["peak_rss_mb"].get<double>(), 0.0);
  // loss of a random init on random tokens starts near ln(32000) = 10.37
  EXPECT_NE(r.out.find("loss 10."), std::string::npos) << r.out;
}

TEST(Cli, UnknownCommand) {
  CmdResult r = run(kSft + " frobnicate");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("unknown command 'frobnicate'"), std::string::npos);
}
