// config.json parsing for the three architectures, both RoPE spellings, every rejected field,
// the config.json writer, and rope_inv_freq() against transformers + torch (fixture from
// tools/make_rope_reference.py).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <fstream>

#include "io/safetensors.h"
#include "io_test_util.h"
#include "model/llama_config.h"

namespace sft {
namespace {

using json = nlohmann::json;
using test::expect_error;

const std::string kFixtures = std::string(SFT_SOURCE_DIR) + "/tests/io/fixtures/";

// Llama-2-7B's config.json (HF Hub), trimmed of nothing.
json llama2_7b() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "tie_word_embeddings": false,
    "torch_dtype": "float16", "transformers_version": "4.31.0.dev0", "use_cache": true, "vocab_size": 32000})");
}

json llama31_8b_instruct() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 128256})");
}

json mistral_7b_v02() {
  return json::parse(R"({
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16", "transformers_version": "4.36.0", "use_cache": true, "vocab_size": 32000})");
}

json qwen25_05b() {
  return json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
    "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
}

LlamaConfig parse(const json& j) { return parse_llama_config(j, "dir/config.json"); }

void expect_config_error(const json& j, std::initializer_list<std::string> fragments) {
  std::vector<std::string> all(fragments);
  try {
    parse(j);
    ADD_FAILURE() << "accepted: " << j.dump();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(msg.starts_with("[config] dir/config.json: ")) << msg;
    for (const std::string& f : all) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

TEST(LlamaConfig, Llama2) {
  const LlamaConfig c = parse(llama2_7b());
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 11008);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling, RopeScaling::none);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.has_qkv_bias());
  EXPECT_FALSE(c.has_o_bias());
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c.pad_token_id, -1);
  EXPECT_EQ(c.torch_dtype, "float16");
  EXPECT_EQ(c.initializer_range, 0.02);
  EXPECT_EQ(c.source, llama2_7b());
}

TEST(LlamaConfig, Llama31WithLlama3RopeAndEosList) {
  const LlamaConfig c = parse(llama31_8b_instruct());
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling, RopeScaling::llama3);
  EXPECT_EQ(c.rope_factor, 8.0);
  EXPECT_EQ(c.rope_low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_original_max_position_embeddings, 8192);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(LlamaConfig, Mistral) {
  const LlamaConfig c = parse(mistral_7b_v02());
  EXPECT_EQ(c.architecture, "MistralForCausalLM");
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_FALSE(c.has_qkv_bias());
  EXPECT_EQ(c.sliding_window, 0);  // v0.2: null
  json j = mistral_7b_v02();
  j["sliding_window"] = 32768;  // == max_position_embeddings: a limit only past the context
  EXPECT_EQ(parse(j).sliding_window, 32768);
  j["sliding_window"] = 4096;   // Mistral-7B-v0.1: kept as a limit on sequence length
  EXPECT_EQ(parse(j).sliding_window, 4096);
  EXPECT_EQ(llama_config_to_json(parse(j))["sliding_window"], 4096);  // saved as read
  j.erase("sliding_window");    // MistralConfig's default is 4096
  EXPECT_EQ(parse(j).sliding_window, 4096);
  j["sliding_window"] = 0;
  expect_config_error(j, {"sliding_window is 0, expected > 0 or null"});
}

TEST(LlamaConfig, Qwen2) {
  const LlamaConfig c = parse(qwen25_05b());
  EXPECT_EQ(c.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_TRUE(c.has_qkv_bias());
  EXPECT_FALSE(c.has_o_bias());
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151645});
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window false
  json j = qwen25_05b();
  j["sliding_window"] = 4096;
  EXPECT_EQ(parse(j).sliding_window, 0);  // use_sliding_window false: no window at all
  j["use_sliding_window"] = true;
  EXPECT_EQ(parse(j).sliding_window, 4096);
  j = qwen25_05b();
  j.erase("bos_token_id");
  j.erase("eos_token_id");
  EXPECT_EQ(parse(j).bos_token_id, -1);  // Qwen2Config leaves them None
  EXPECT_TRUE(parse(j).eos_token_ids.empty());
}

TEST(LlamaConfig, ArchitectureFromModelTypeAndDefaults) {
  json j = {{"model_type", "llama"}, {"vocab_size", 100}, {"hidden_size", 64}, {"intermediate_size", 128},
            {"num_hidden_layers", 2}, {"num_attention_heads", 4}};
  const LlamaConfig c = parse(j);
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c.torch_dtype, "float32");
  j["num_key_value_heads"] = nullptr;  // null = default
  j["head_dim"] = nullptr;
  j["pad_token_id"] = -1;              // LLaMA-1 configs
  j["eos_token_id"] = nullptr;
  j["bos_token_id"] = nullptr;
  const LlamaConfig d = parse(j);
  EXPECT_EQ(d.num_key_value_heads, 4);
  EXPECT_EQ(d.head_dim, 16);
  EXPECT_EQ(d.pad_token_id, -1);
  EXPECT_TRUE(d.eos_token_ids.empty());
  EXPECT_EQ(d.bos_token_id, -1);
}

TEST(LlamaConfig, HeadDimExplicitWins) {
  json j = mistral_7b_v02();
  j["hidden_size"] = 5120;
  j["head_dim"] = 128;  // Mistral-Nemo: 32 * 128 != 5120
  const LlamaConfig c = parse(j);
  EXPECT_EQ(c.head_dim, 128);
  j["hidden_size"] = 5000;  // not divisible by 32, fine while head_dim is set
  EXPECT_EQ(parse(j).head_dim, 128);
  j.erase("head_dim");
  expect_config_error(j, {"hidden_size 5000 is not divisible by num_attention_heads 32", "head_dim is not set"});
}

TEST(LlamaConfig, RopeSpellings) {
  json j = llama2_7b();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  LlamaConfig c = parse(j);
  EXPECT_EQ(c.rope_scaling, RopeScaling::linear);
  EXPECT_EQ(c.rope_factor, 2.0);
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4}};
  c = parse(j);
  EXPECT_EQ(c.rope_scaling, RopeScaling::dynamic);
  EXPECT_EQ(c.rope_factor, 4.0);
  EXPECT_EQ(c.rope_original_max_position_embeddings, 0);
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(parse(j).rope_scaling, RopeScaling::none);

  // v5: rope_parameters carries rope_theta and wins over the legacy keys.
  json v5 = llama31_8b_instruct();
  v5.erase("rope_scaling");
  v5.erase("rope_theta");
  v5["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 32.0},
                           {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 8192}};
  c = parse(v5);
  EXPECT_EQ(c.rope_scaling, RopeScaling::llama3);
  EXPECT_EQ(c.rope_factor, 32.0);
  EXPECT_EQ(c.rope_theta, 500000.0);
  v5["rope_theta"] = 10000.0;
  v5["rope_scaling"] = nullptr;
  EXPECT_EQ(parse(v5).rope_theta, 500000.0);
  EXPECT_EQ(parse(v5).rope_scaling, RopeScaling::llama3);
  v5["rope_parameters"] = {{"rope_type", "default"}};  // no theta inside: falls back to rope_theta
  EXPECT_EQ(parse(v5).rope_theta, 10000.0);
  EXPECT_EQ(parse(v5).rope_scaling, RopeScaling::none);
  v5["rope_parameters"] = {{"rope_theta", 20000.0}};  // no rope_type: default
  EXPECT_EQ(parse(v5).rope_theta, 20000.0);
  EXPECT_EQ(parse(v5).rope_scaling, RopeScaling::none);
}

TEST(LlamaConfig, RejectsRopeProblems) {
  json j = llama2_7b();
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  expect_config_error(j, {"unknown rope type 'yarn'", "rope_scaling.type", "default, linear, dynamic, llama3"});
  j["rope_scaling"] = {{"factor", 4.0}};
  expect_config_error(j, {"rope_scaling has no 'rope_type' (or 'type')"});
  j["rope_scaling"] = {{"type", "linear"}};
  expect_config_error(j, {"missing required field 'rope_scaling.factor'"});
  j["rope_scaling"] = {{"type", "linear"}, {"factor", "2"}};
  expect_config_error(j, {"'rope_scaling.factor' is \"2\" (a string), expected a number"});
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 0.0}};
  expect_config_error(j, {"rope_scaling factor is 0, expected > 0"});
  j["rope_scaling"] = "linear";
  expect_config_error(j, {"'rope_scaling' is \"linear\" (a string), expected an object or null"});
  json l3 = llama31_8b_instruct();
  l3["rope_scaling"].erase("low_freq_factor");
  expect_config_error(l3, {"missing required field 'rope_scaling.low_freq_factor'"});
  l3 = llama31_8b_instruct();
  l3["rope_scaling"].erase("original_max_position_embeddings");
  expect_config_error(l3, {"missing required field 'rope_scaling.original_max_position_embeddings'"});
  l3 = llama31_8b_instruct();
  l3["rope_scaling"]["high_freq_factor"] = 0.5;
  expect_config_error(l3, {"low_freq_factor 1 and high_freq_factor 0.5"});
  json v5 = llama2_7b();
  v5["rope_parameters"] = {{"rope_type", "longrope"}};
  expect_config_error(v5, {"unknown rope type 'longrope'", "rope_parameters.rope_type"});
  v5["rope_parameters"] = {{"rope_type", "linear"}};
  expect_config_error(v5, {"missing required field 'rope_parameters.factor'"});
}

TEST(LlamaConfig, RejectsMissingAndMistypedFields) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}) {
    json j = llama2_7b();
    j.erase(key);
    expect_config_error(j, {fmt::format("missing required field '{}'", key)});
  }
  json j = llama2_7b();
  j["hidden_size"] = "4096";
  expect_config_error(j, {"'hidden_size' is \"4096\" (a string), expected an integer"});
  j["hidden_size"] = 4096.0;
  expect_config_error(j, {"'hidden_size' is 4096.0 (a float), expected an integer"});
  j = llama2_7b();
  j["hidden_size"] = nullptr;
  expect_config_error(j, {"missing required field 'hidden_size'"});
  j = llama2_7b();
  j["tie_word_embeddings"] = "false";
  expect_config_error(j, {"'tie_word_embeddings' is \"false\" (a string), expected true or false"});
  j = llama2_7b();
  j["rms_norm_eps"] = "1e-5";
  expect_config_error(j, {"'rms_norm_eps' is \"1e-5\" (a string), expected a number"});
  j = llama2_7b();
  j["eos_token_id"] = {2, "x"};
  expect_config_error(j, {"'eos_token_id' is \"x\" (a string), expected an integer"});
  j = llama2_7b();
  j["architectures"] = "LlamaForCausalLM";
  expect_config_error(j, {"'architectures' is \"LlamaForCausalLM\" (a string), expected a list"});
  expect_config_error(json::array(), {"top level is array, expected a JSON object"});
}

TEST(LlamaConfig, RejectsInconsistentValues) {
  json j = llama2_7b();
  j["num_key_value_heads"] = 5;
  expect_config_error(j, {"num_attention_heads 32 is not divisible by num_key_value_heads 5"});
  for (const char* key : {"num_hidden_layers", "vocab_size", "intermediate_size", "num_key_value_heads",
                          "max_position_embeddings"}) {
    j = llama2_7b();
    j[key] = 0;
    expect_config_error(j, {fmt::format("{} is 0, expected > 0", key)});
  }
  j = llama2_7b();
  j["num_attention_heads"] = -4;
  expect_config_error(j, {"num_attention_heads is -4, expected > 0"});
  j = llama2_7b();
  j["head_dim"] = 0;
  expect_config_error(j, {"head_dim is 0, expected > 0"});
  j = llama2_7b();
  j["rms_norm_eps"] = 0;
  expect_config_error(j, {"rms_norm_eps is 0, expected > 0"});
  j = llama2_7b();
  j["architectures"] = {"GPT2LMHeadModel"};
  expect_config_error(j, {"unknown architecture 'GPT2LMHeadModel'",
                          "supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"});
  j = llama2_7b();
  j["model_type"] = "mistral";
  expect_config_error(j, {"model_type 'mistral' does not match architecture LlamaForCausalLM, expected 'llama'"});
  j.erase("architectures");
  j.erase("model_type");
  expect_config_error(j, {"missing required field 'architectures' (or 'model_type')"});
  j = llama2_7b();
  j["hidden_act"] = "gelu";
  expect_config_error(j, {"hidden_act 'gelu' is not supported, expected 'silu'"});
  j = llama2_7b();
  j["mlp_bias"] = true;
  expect_config_error(j, {"mlp_bias true is not supported"});
  j = llama2_7b();
  j["torch_dtype"] = "int8";
  expect_config_error(j, {"torch_dtype 'int8' is not supported"});
}

TEST(LlamaConfig, DtypeKeyAndAttentionBias) {
  json j = llama2_7b();
  j.erase("torch_dtype");
  j["dtype"] = "bfloat16";  // transformers >= 4.56
  EXPECT_EQ(parse(j).torch_dtype, "bfloat16");
  j["attention_bias"] = true;
  const LlamaConfig c = parse(j);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.has_qkv_bias());
  EXPECT_TRUE(c.has_o_bias());
  json m = mistral_7b_v02();
  m["attention_bias"] = true;  // MistralAttention has no biases; the key is ignored, as in HF
  EXPECT_FALSE(parse(m).has_qkv_bias());
}

TEST(LlamaConfig, LoadFromFile) {
  test::TempDir dir;
  const std::string p = dir.file("config.json");
  test::write_bytes(p, qwen25_05b().dump(2));
  EXPECT_EQ(load_llama_config(p).hidden_size, 896);
  test::write_bytes(p, "{\"hidden_size\": 1, \"hidden_size\": 2}");
  expect_error([&] { load_llama_config(p); }, {"[config] " + p, "not valid JSON", "duplicate key \"hidden_size\""});
  test::write_bytes(p, "{\"hidden_size\": }");
  expect_error([&] { load_llama_config(p); }, {"[config] " + p, "not valid JSON", "line 1, column"});
  expect_error([&] { load_llama_config(dir.file("nope.json")); }, {"[config] ", "nope.json: cannot read: no such file"});
  test::write_bytes(p, "{\"architectures\": [\"LlamaForCausalLM\"]}");
  expect_error([&] { load_llama_config(p); }, {"[config] " + p + ": missing required field 'vocab_size'"});
}

TEST(LlamaConfig, ValidateCatchesProgrammaticMistakes) {
  LlamaConfig c;  // defaults are a valid LLaMA-7B-like config
  EXPECT_NO_THROW(validate_llama_config(c, "preset"));
  c.num_key_value_heads = 3;
  expect_error([&] { validate_llama_config(c, "preset tiny"); },
               {"[config] preset tiny: num_attention_heads 32 is not divisible by num_key_value_heads 3"});
  c = LlamaConfig();
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  expect_error([&] { validate_llama_config(c, "x"); }, {"q/k/v biases"});
  c = LlamaConfig();
  c.head_dim = 127;
  expect_error([&] { validate_llama_config(c, "x"); }, {"head_dim 127 is odd"});
}

TEST(LlamaConfig, ToJsonRoundTrip) {
  for (const json& src : {llama2_7b(), llama31_8b_instruct(), mistral_7b_v02(), qwen25_05b()}) {
    json with_unknown = src;
    with_unknown["my_custom_key"] = {{"nested", 1}};
    const LlamaConfig c = parse(with_unknown);
    const json out = llama_config_to_json(c);
    EXPECT_EQ(out["my_custom_key"], with_unknown["my_custom_key"]);
    EXPECT_EQ(out["use_cache"], true);
    EXPECT_EQ(out["architectures"], src["architectures"]);
    EXPECT_EQ(out["torch_dtype"], src["torch_dtype"]);
    EXPECT_EQ(out["eos_token_id"], src["eos_token_id"]);
    EXPECT_EQ(out["tie_word_embeddings"], src["tie_word_embeddings"]);
    const LlamaConfig back = parse(out);
    EXPECT_EQ(llama_config_to_json(back), out);  // a fixed point
    EXPECT_EQ(back.head_dim, c.head_dim);
    EXPECT_EQ(back.rope_scaling, c.rope_scaling);
    EXPECT_EQ(back.rope_factor, c.rope_factor);
    EXPECT_EQ(back.has_qkv_bias(), c.has_qkv_bias());
    EXPECT_EQ(back.eos_token_ids, c.eos_token_ids);
  }
  // Legacy keys are written (both "type" and "rope_type"); a v5 rope_parameters is replaced.
  json v5 = llama31_8b_instruct();
  v5.erase("rope_scaling");
  v5["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                           {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 8192}};
  v5.erase("torch_dtype");
  v5["dtype"] = "bfloat16";
  LlamaConfig c = parse(v5);
  c.torch_dtype = "float32";
  const json out = llama_config_to_json(c);
  EXPECT_FALSE(out.contains("rope_parameters"));
  EXPECT_EQ(out["rope_theta"], 500000.0);
  EXPECT_EQ(out["rope_scaling"], json::parse(R"({"type": "llama3", "rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})"));
  EXPECT_EQ(out["torch_dtype"], "float32");
  EXPECT_EQ(out["dtype"], "float32");  // kept consistent when the source used it
  // FastChat-style linear scaling set by the caller is saved; no pad_token_id key is invented.
  c = parse(llama2_7b());
  c.rope_scaling = RopeScaling::linear;
  c.rope_factor = 2.0;
  const json lin = llama_config_to_json(c);
  EXPECT_EQ(lin["rope_scaling"], json::parse(R"({"type": "linear", "rope_type": "linear", "factor": 2.0})"));
  EXPECT_FALSE(lin.contains("pad_token_id"));
  // A preset (no source) becomes a complete config.
  const json fresh = llama_config_to_json(LlamaConfig());
  EXPECT_EQ(parse(fresh).hidden_size, 4096);
  EXPECT_EQ(fresh["model_type"], "llama");
  EXPECT_TRUE(fresh["rope_scaling"].is_null());
}

// rope_inv_freq() against transformers' fp32 computation. pow() is the one place where torch
// (SLEEF vectorised powf, <= 1 ulp) and libm may disagree, so values may differ by 1 ulp.
TEST(RopeInvFreq, MatchesTransformers) {
  std::ifstream in(kFixtures + "rope_reference.json");
  const json ref = json::parse(in);
  ASSERT_GE(ref["cases"].size(), 10u);
  size_t total = 0, exact = 0;
  for (const json& c : ref["cases"]) {
    const std::string name = c["name"];
    const LlamaConfig cfg = parse_llama_config(c["config"], name);
    const std::vector<float> ours = rope_inv_freq(cfg, c["seq_len"].get<int64_t>());
    const auto& bits = c["inv_freq_bits"];
    ASSERT_EQ(ours.size(), bits.size()) << name;
    for (size_t i = 0; i < ours.size(); ++i) {
      const uint32_t want = bits[i].get<uint32_t>(), got = std::bit_cast<uint32_t>(ours[i]);
      const int64_t ulp = std::abs(int64_t(want) - int64_t(got));
      EXPECT_LE(ulp, 1) << name << "[" << i << "]: got " << ours[i] << ", expected " << std::bit_cast<float>(want);
      ++total;
      exact += ulp == 0;
    }
  }
  std::printf("rope_inv_freq: %zu of %zu values bit-identical to transformers\n", exact, total);
  EXPECT_GE(double(exact), 0.95 * double(total));
}

TEST(RopeInvFreq, ScalingRules) {
  LlamaConfig c;
  c.head_dim = 8;
  c.rope_theta = 10000.0;
  const std::vector<float> base = rope_inv_freq(c, 100);
  ASSERT_EQ(base.size(), 4u);
  EXPECT_EQ(base[0], 1.0f);
  EXPECT_FLOAT_EQ(base[2], 0.01f);
  c.rope_scaling = RopeScaling::linear;
  c.rope_factor = 4.0;
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(rope_inv_freq(c, 100)[i], base[i] / 4.0f);
  c.rope_scaling = RopeScaling::dynamic;
  c.max_position_embeddings = 2048;
  EXPECT_EQ(rope_inv_freq(c, 2048), base);  // only beyond max_position_embeddings
  EXPECT_LT(rope_inv_freq(c, 4096)[1], base[1]);
  EXPECT_EQ(rope_inv_freq(c, 4096)[0], 1.0f);
}

}  // namespace
}  // namespace sft
