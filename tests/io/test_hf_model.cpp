// HF model directories: save/load round trips (F32, bit-exact BF16/F16, sharded with 3+ shards,
// biases, tied embeddings), every reported mismatch (missing / unexpected / mis-shaped / dtype),
// index problems, and an interop test against transformers (tools/hf_interop.py, needs .venv).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>

#include "backend/backend.h"
#include "io/hf_model.h"
#include "io/safetensors.h"
#include "io_test_util.h"
#include "model/llama.h"

namespace sft {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::expect_error;
using test::TempDir;

LlamaConfig tiny_config(const std::string& arch = "llama") {
  json j = {{"architectures", {arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
            {"vocab_size", 64}, {"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 3},
            {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"max_position_embeddings", 128},
            {"rms_norm_eps", 1e-5}, {"torch_dtype", "float32"}, {"my_unknown_key", "kept"}};
  if (arch == "qwen2") j["tie_word_embeddings"] = true;
  if (arch == "llama_bias") j["attention_bias"] = true;
  return parse_llama_config(j, "tiny");
}

struct Fixture {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  std::unique_ptr<LlamaModel> model;
  explicit Fixture(const LlamaConfig& cfg, uint32_t seed = 1) {
    model = std::make_unique<LlamaModel>(cfg, *backend);
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 0.3f);
    float* p = model->params_flat().f32();
    for (int64_t i = 0; i < model->num_params(); ++i) p[i] = dist(rng);
  }
};

bool same_params(LlamaModel& a, LlamaModel& b) {
  return a.num_params() == b.num_params() &&
         std::memcmp(a.params_flat().data, b.params_flat().data, size_t(a.num_params()) * 4) == 0;
}

// The model's tensors written as DIR/model.safetensors in dtype, with optional edits.
void write_model_file(LlamaModel& m, const std::string& dir, DType dt,
                      const std::function<void(std::vector<SafetensorsWriteItem>&)>& edit = nullptr) {
  std::vector<SafetensorsWriteItem> items;
  for (const ParamRef& p : m.param_table()) items.push_back(SafetensorsWriteItem::from_tensor(p.hf_name, p.view));
  if (edit) edit(items);
  write_safetensors(dir + "/model.safetensors", items, {}, dt);
}

TEST(HfModel, SaveLoadF32) {
  TempDir dir;
  Fixture a(tiny_config());
  save_hf_model(*a.model, dir.path.string(), SaveOptions{.dtype = DType::f32});
  EXPECT_TRUE(fs::exists(dir.path / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir.path / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir.path / "model.safetensors.tmp"));
  const json cfg = json::parse(test::read_bytes(dir.file("config.json")));
  EXPECT_EQ(cfg["torch_dtype"], "float32");
  EXPECT_EQ(cfg["use_cache"], true);
  EXPECT_EQ(cfg["my_unknown_key"], "kept");
  EXPECT_EQ(SafetensorsFile(dir.file("model.safetensors")).metadata().at("format"), "pt");

  auto backend = create_backend("cpu");
  auto b = load_hf_model(dir.path.string(), *backend);
  EXPECT_EQ(b->config().hidden_size, 32);
  EXPECT_EQ(b->config().num_key_value_heads, 2);
  EXPECT_TRUE(same_params(*a.model, *b));
}

// A bf16 (f16) directory -> fp32 master -> saved again in the config's dtype: identical files.
void half_round_trip(DType dt, const std::string& arch) {
  TempDir src, out;
  LlamaConfig cfg = tiny_config(arch);
  cfg.torch_dtype = torch_name(dt);
  Fixture a(cfg);
  save_hf_model(*a.model, src.path.string());  // default dtype: the config's
  EXPECT_EQ(SafetensorsFile(src.file("model.safetensors")).tensors()[0].dtype, dtype_name(dt));
  auto backend = create_backend("cpu");
  auto b = load_hf_model(src.path.string(), *backend);
  EXPECT_EQ(b->config().torch_dtype, torch_name(dt));
  save_hf_model(*b, out.path.string());
  EXPECT_EQ(test::read_bytes(src.file("model.safetensors")), test::read_bytes(out.file("model.safetensors")))
      << dtype_name(dt) << " " << arch;
  EXPECT_EQ(test::read_bytes(src.file("config.json")), test::read_bytes(out.file("config.json")));
}

TEST(HfModel, Bf16RoundTripIsBitExact) { half_round_trip(DType::bf16, "llama"); }
TEST(HfModel, F16RoundTripIsBitExact) { half_round_trip(DType::f16, "llama"); }
TEST(HfModel, Qwen2TiedRoundTrip) { half_round_trip(DType::bf16, "qwen2"); }
TEST(HfModel, AttentionBiasRoundTrip) { half_round_trip(DType::bf16, "llama_bias"); }

TEST(HfModel, NamesFollowTheConfig) {
  TempDir dir;
  Fixture q(tiny_config("qwen2"));
  save_hf_model(*q.model, dir.path.string(), SaveOptions{.dtype = DType::bf16});
  SafetensorsFile f(dir.file("model.safetensors"));
  EXPECT_EQ(f.find("lm_head.weight"), nullptr);  // tied: absent, as transformers saves it
  EXPECT_NE(f.find("model.layers.2.self_attn.k_proj.bias"), nullptr);
  EXPECT_EQ(f.find("model.layers.2.self_attn.o_proj.bias"), nullptr);
  EXPECT_EQ(f.at("model.layers.0.self_attn.k_proj.weight").shape, (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(f.tensors().size(), 1 + 3 * 12 + 1u);
}

TEST(HfModel, ShardedSaveLoad) {
  TempDir dir;
  Fixture a(tiny_config());
  // Tensors in bf16: embed/lm_head 4096 B, q/o 2048 B, k/v 1024 B, mlp 3072 B, norms 64 B.
  const int64_t limit = 5000;
  save_hf_model(*a.model, dir.path.string(), SaveOptions{.dtype = DType::bf16, .max_shard_bytes = limit});
  EXPECT_FALSE(fs::exists(dir.path / "model.safetensors"));
  const json index = json::parse(test::read_bytes(dir.file("model.safetensors.index.json")));
  const auto& wm = index["weight_map"];
  std::set<std::string> files;
  for (auto& [name, file] : wm.items()) files.insert(file.get<std::string>());
  const size_t n = files.size();
  ASSERT_GE(n, 3u);
  EXPECT_EQ(*files.begin(), fmt::format("model-00001-of-{:05d}.safetensors", n));
  EXPECT_EQ(*files.rbegin(), fmt::format("model-{:05d}-of-{:05d}.safetensors", n, n));

  // Every tensor is where the index says, each shard is within the limit, shards follow table order.
  uint64_t total = 0;
  std::string prev_file;
  for (const ParamRef& p : a.model->param_table()) {
    const std::string file = wm.at(p.hf_name);
    EXPECT_GE(file, prev_file) << p.hf_name;
    prev_file = file;
    total += uint64_t(p.view.numel()) * 2;
  }
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(wm.size(), a.model->param_table().size());
  for (const std::string& file : files) {
    SafetensorsFile f(dir.file(file));
    uint64_t bytes = 0;
    for (const auto& t : f.tensors()) {
      EXPECT_EQ(wm.at(t.name), file);
      bytes += t.nbytes();
    }
    EXPECT_TRUE(bytes <= uint64_t(limit) || f.tensors().size() == 1) << file << ": " << bytes;
  }

  auto backend = create_backend("cpu");
  auto b = load_hf_model(dir.path.string(), *backend);
  Fixture ref(tiny_config());  // a's values rounded to bf16
  for (int64_t i = 0; i < a.model->num_params(); ++i)
    ref.model->params_flat().f32()[i] = bf16_to_f32(f32_to_bf16(a.model->params_flat().f32()[i]));
  EXPECT_TRUE(same_params(*ref.model, *b));

  // A limit below the largest tensor: that tensor (the embedding) sits alone in its shard.
  TempDir small;
  save_hf_model(*a.model, small.path.string(), SaveOptions{.dtype = DType::bf16, .max_shard_bytes = 3000});
  const json idx = json::parse(test::read_bytes(small.file("model.safetensors.index.json")));
  const std::string embed_file = idx["weight_map"]["model.embed_tokens.weight"];
  EXPECT_EQ(SafetensorsFile(small.file(embed_file)).tensors().size(), 1u);
  auto c = load_hf_model(small.path.string(), *backend);
  EXPECT_TRUE(same_params(*ref.model, *c));
}

TEST(HfModel, ResaveRemovesStaleWeightFiles) {
  TempDir dir;
  Fixture a(tiny_config());
  save_hf_model(*a.model, dir.path.string(), SaveOptions{.dtype = DType::bf16, .max_shard_bytes = 3000});
  ASSERT_TRUE(fs::exists(dir.path / "model.safetensors.index.json"));
  test::write_bytes(dir.file("tokenizer.json"), "{}");
  save_hf_model(*a.model, dir.path.string(), SaveOptions{.dtype = DType::f32});
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"config.json", "model.safetensors", "tokenizer.json"}));
  save_hf_model(*a.model, dir.path.string(), SaveOptions{.dtype = DType::bf16, .max_shard_bytes = 3000});
  EXPECT_FALSE(fs::exists(dir.path / "model.safetensors"));
  auto backend = create_backend("cpu");
  EXPECT_NO_THROW(load_hf_model(dir.path.string(), *backend));
}

TEST(HfModel, ReportsAllMismatchesInOneError) {
  TempDir dir;
  Fixture a(tiny_config());
  std::vector<float> big(65 * 32, 0.5f), extra(4, 1.0f);
  std::vector<int32_t> ints(32, 1);
  write_model_file(*a.model, dir.path.string(), DType::bf16, [&](std::vector<SafetensorsWriteItem>& items) {
    std::erase_if(items, [](const SafetensorsWriteItem& t) {
      return t.name == "model.layers.1.mlp.up_proj.weight" || t.name == "model.norm.weight";
    });
    for (SafetensorsWriteItem& t : items) {
      if (t.name == "model.embed_tokens.weight") t = {t.name, big.data(), "F32", {65, 32}};
      if (t.name == "model.layers.2.input_layernorm.weight") t = {t.name, ints.data(), "I32", {32}};
    }
    items.push_back({"model.layers.7.mlp.extra.weight", extra.data(), "F32", {4}});
    items.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", extra.data(), "F32", {4}});  // ignored
  });
  const std::string d = dir.path.string();
  auto backend = create_backend("cpu");
  LlamaModel m(tiny_config(), *backend);
  expect_error([&] { load_hf_weights(d, m); },
               {"[hf_model] " + d + ": missing tensors: model.layers.1.mlp.up_proj.weight, model.norm.weight; "
                "unexpected: model.layers.7.mlp.extra.weight; "
                "'model.embed_tokens.weight' has shape (65, 32), expected (64, 32); "
                "'model.layers.2.input_layernorm.weight' has dtype I32, expected F32, BF16 or F16"});
}

TEST(HfModel, SingleProblems) {
  TempDir dir;
  const std::string d = dir.path.string();
  Fixture a(tiny_config());
  auto backend = create_backend("cpu");
  LlamaModel m(tiny_config(), *backend);
  write_model_file(*a.model, d, DType::f32, [](auto& items) { items.pop_back(); });  // lm_head.weight
  expect_error([&] { load_hf_weights(d, m); }, {"[hf_model] " + d + ": missing tensors: lm_head.weight"});
  write_model_file(*a.model, d, DType::f32, [&](auto& items) {
    for (auto& t : items)
      if (t.name == "model.layers.0.mlp.down_proj.weight") t.shape = {48, 32};  // transposed
  });
  expect_error([&] { load_hf_weights(d, m); },
               {"'model.layers.0.mlp.down_proj.weight' has shape (48, 32), expected (32, 48)"});
  fs::remove(dir.path / "model.safetensors");
  expect_error([&] { load_hf_weights(d, m); }, {"[hf_model] " + d + ": no model.safetensors or model.safetensors.index.json"});
  test::write_bytes(dir.file("pytorch_model.bin"), "x");
  expect_error([&] { load_hf_weights(d, m); }, {"found pytorch_model.bin"});
}

TEST(HfModel, TiedLmHeadIsIgnoredOnlyWhenIdentical) {
  TempDir dir;
  const std::string d = dir.path.string();
  Fixture q(tiny_config("qwen2"));
  const Tensor embed = q.model->weights().embed;
  std::vector<float> other(size_t(embed.numel()), 0.25f);
  write_model_file(*q.model, d, DType::bf16, [&](auto& items) {
    items.push_back(SafetensorsWriteItem::from_tensor("lm_head.weight", embed));
  });
  auto backend = create_backend("cpu");
  LlamaModel m(tiny_config("qwen2"), *backend);
  EXPECT_NO_THROW(load_hf_weights(d, m));
  write_model_file(*q.model, d, DType::bf16, [&](auto& items) {
    items.push_back({"lm_head.weight", other.data(), "F32", {embed.shape[0], embed.shape[1]}});
  });
  expect_error([&] { load_hf_weights(d, m); }, {"unexpected: lm_head.weight (tie_word_embeddings is true"});
}

TEST(HfModel, IndexProblems) {
  TempDir dir;
  const std::string d = dir.path.string();
  Fixture a(tiny_config());
  save_hf_model(*a.model, d, SaveOptions{.dtype = DType::bf16, .max_shard_bytes = 5000});
  const std::string index_path = dir.file("model.safetensors.index.json");
  const json index = json::parse(test::read_bytes(index_path));
  auto backend = create_backend("cpu");
  LlamaModel m(tiny_config(), *backend);

  json bad = index;
  bad["weight_map"]["model.norm.weight"] = "model-00099-of-00099.safetensors";
  test::write_bytes(index_path, bad.dump());
  expect_error([&] { load_hf_weights(d, m); }, {index_path, "'model.norm.weight'", "model-00099-of-00099.safetensors",
                                                "does not exist"});
  bad = index;
  bad["weight_map"]["model.norm.weight"] = index["weight_map"]["model.embed_tokens.weight"];
  test::write_bytes(index_path, bad.dump());
  expect_error([&] { load_hf_weights(d, m); }, {"maps 'model.norm.weight' to", "which has no such tensor"});
  bad = index;
  bad["weight_map"].erase("model.norm.weight");
  test::write_bytes(index_path, bad.dump());
  expect_error([&] { load_hf_weights(d, m); }, {"tensor 'model.norm.weight' in", "is not listed"});
  bad = index;
  bad["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  test::write_bytes(index_path, bad.dump());
  expect_error([&] { load_hf_weights(d, m); }, {"expected a file name inside the directory"});
  test::write_bytes(index_path, "{\"weight_map\": []}");
  expect_error([&] { load_hf_weights(d, m); }, {index_path, "expected an object with a 'weight_map' object"});
  test::write_bytes(index_path, "{\"weight_map\": {\"a\": \"x\", \"a\": \"y\"}}");
  expect_error([&] { load_hf_weights(d, m); }, {index_path, "duplicate key \"a\""});
  test::write_bytes(index_path, index.dump());
  EXPECT_NO_THROW(load_hf_weights(d, m));
}

// A third-party writer may leave the data section unaligned: an odd header length.
TEST(HfModel, LoadsUnalignedData) {
  TempDir dir;
  const std::string d = dir.path.string();
  Fixture a(tiny_config());
  save_hf_model(*a.model, d, SaveOptions{.dtype = DType::bf16});
  const std::string bytes = test::read_bytes(dir.file("model.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const std::string header = bytes.substr(8, n) + " ";
  test::write_bytes(dir.file("model.safetensors"), test::safetensors_bytes(header, bytes.substr(8 + n)));
  auto backend = create_backend("cpu");
  auto b = load_hf_model(d, *backend);
  auto c = load_hf_model(d, *backend);
  save_hf_model(*b, d);
  EXPECT_EQ(test::read_bytes(dir.file("model.safetensors")), bytes);
  EXPECT_TRUE(same_params(*b, *c));
}

TEST(HfModel, GenerationConfig) {
  TempDir dir;
  LlamaConfig cfg = tiny_config();
  cfg.bos_token_id = 128000;
  cfg.eos_token_ids = {128001, 128009};
  cfg.pad_token_id = -1;
  write_generation_config(cfg, dir.path.string());
  const json g = json::parse(test::read_bytes(dir.file("generation_config.json")));
  EXPECT_EQ(g, json::parse(R"({"_from_model_config": true, "bos_token_id": 128000, "eos_token_id": [128001, 128009]})"));
  cfg.eos_token_ids = {2};
  cfg.pad_token_id = 0;
  write_generation_config(cfg, dir.path.string());
  EXPECT_EQ(json::parse(test::read_bytes(dir.file("generation_config.json"))),
            json::parse(R"({"_from_model_config": true, "bos_token_id": 128000, "eos_token_id": 2, "pad_token_id": 0})"));
}

// transformers save_pretrained (bf16, 20KB shards) -> load_hf_model -> save_hf_model (5KB shards)
// -> transformers from_pretrained: every tensor bit-identical, for each architecture.
TEST(HfInterop, TransformersRoundTrip) {
  const std::string python = std::string(SFT_SOURCE_DIR) + "/.venv/bin/python";
  const std::string tool = std::string(SFT_SOURCE_DIR) + "/tools/hf_interop.py";
  if (!fs::exists(python)) GTEST_SKIP() << "no .venv (scripts/setup_venv.sh)";
  TempDir dir;
  const std::string hf = dir.file("hf"), ours = dir.file("ours"), log = dir.file("log.txt");
  const std::string make = fmt::format("'{}' '{}' make '{}' > '{}' 2>&1", python, tool, hf, log);
  ASSERT_EQ(std::system(make.c_str()), 0) << test::read_bytes(log);
  for (const std::string arch : {"llama", "mistral", "qwen2"}) {
    auto backend = create_backend("cpu");
    auto model = load_hf_model(hf + "/" + arch, *backend);
    save_hf_model(*model, ours + "/" + arch, SaveOptions{.max_shard_bytes = 5000});
    EXPECT_TRUE(fs::exists(ours + "/" + arch + "/model.safetensors.index.json"));
  }
  const std::string cmp = fmt::format("'{}' '{}' compare '{}' '{}' > '{}' 2>&1", python, tool, hf, ours, log);
  EXPECT_EQ(std::system(cmp.c_str()), 0) << test::read_bytes(log);
}

// Model directories that ship only pytorch_model.bin (one file, or sharded with an index; tied
// embeddings): refused with the conversion command, which then gives weights bit-identical to what
// transformers loads from the .bin files.
TEST(HfInterop, PytorchBinIsRefusedWithTheConversionCommandThatWorks) {
  const std::string python = std::string(SFT_SOURCE_DIR) + "/.venv/bin/python";
  const std::string tool = std::string(SFT_SOURCE_DIR) + "/tools/hf_interop.py";
  const std::string convert = std::string(SFT_SOURCE_DIR) + "/tools/convert_pytorch_bin.py";
  if (!fs::exists(python)) GTEST_SKIP() << "no .venv (scripts/setup_venv.sh)";
  TempDir dir;
  const std::string bin = dir.file("bin"), conv = dir.file("conv"), ours = dir.file("ours"), log = dir.file("log.txt");
  ASSERT_EQ(std::system(fmt::format("'{}' '{}' make_bin '{}' > '{}' 2>&1", python, tool, bin, log).c_str()), 0)
      << test::read_bytes(log);
  for (const std::string arch : {"llama", "mistral", "qwen2"}) {
    const std::string d = bin + "/" + arch;
    auto backend = create_backend("cpu");
    expect_error([&] { load_hf_model(d, *backend); }, {"found pytorch_model.bin", "convert_pytorch_bin.py " + d,
                                                       "weights_only"});
    // converted into a directory of its own, so that transformers below still reads the .bin files
    ASSERT_EQ(std::system(fmt::format("'{}' '{}' '{}' '{}/{}' > '{}' 2>&1", python, convert, d, conv, arch, log).c_str()), 0)
        << test::read_bytes(log);
    auto model = load_hf_model(conv + "/" + arch, *backend);
    save_hf_model(*model, ours + "/" + arch, SaveOptions{});
  }
  EXPECT_TRUE(fs::exists(bin + "/qwen2/pytorch_model.bin.index.json"));  // sharded .bin files, converted
  EXPECT_TRUE(fs::exists(conv + "/qwen2/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(bin + "/llama/pytorch_model.bin"));  // one .bin file
  EXPECT_TRUE(fs::exists(conv + "/llama/model.safetensors"));
  const std::string cmp = fmt::format("'{}' '{}' compare '{}' '{}' > '{}' 2>&1", python, tool, bin, ours, log);
  EXPECT_EQ(std::system(cmp.c_str()), 0) << test::read_bytes(log);
}

}  // namespace
}  // namespace sft
