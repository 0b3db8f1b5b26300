// Resource limits checked up front, never an allocator abort: a config.json whose tensors cannot
// be allocated is refused by the config parser and by `sft train`; a sample of a million tokens is
// truncated, not fatal; a sample too large for the memory given, and a 2 GiB line whatever the
// memory, are refused before they are parsed, naming them; a generated ~200 MB file is refused after its first samples when its estimated
// memory exceeds the budget (in a fraction of the time a full load takes), and loads within its
// estimate otherwise (anonymous memory, sampled while it loads). Files are generated in a temp
// directory and deleted.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <thread>

#include "core/check.h"
#include "data/dataset.h"
#include "data_test_util.h"
#include "model/llama_config.h"
#include "tokenizer/tokenizer.h"

using namespace data_test;

namespace {

const sft::Tokenizer& llama2() {
  static auto tok = sft::load_tokenizer(kLlama2);
  return *tok;
}

// Deterministic English-like text: words from a small list, ~1 LLaMA token per word.
class Words {
 public:
  explicit Words(uint32_t seed) : rng_(seed) {}
  std::string text(size_t bytes) {
    static const char* w[] = {"the", "of", "and", "to", "in", "is", "was", "for", "that", "with", "as", "on", "by",
                              "at", "from", "his", "an", "were", "are", "which", "this", "be", "or", "has", "had",
                              "not", "first", "one", "their", "its", "new", "after", "who", "they", "have", "her"};
    std::string s;
    s.reserve(bytes + 16);
    while (s.size() < bytes) {
      s += w[rng_() % (sizeof(w) / sizeof(w[0]))];
      s += rng_() % 12 == 0 ? ". " : " ";
    }
    return s;
  }
  size_t below(size_t n) { return rng_() % n; }

 private:
  std::mt19937 rng_;
};

std::string sample(const std::string& question, const std::string& answer) {
  return nlohmann::json{{"conversations", {{{"from", "human"}, {"value", question}}, {{"from", "gpt"}, {"value", answer}}}}}
      .dump();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const sft::Error& e) {
    return e.what();
  }
  return "";
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Peak anonymous memory (RssAnon: the heap, not the mapped data file's pages, which the kernel
// can drop) while `f` runs, above what it was before, sampled every 5 ms.
int64_t peak_anon_growth(const std::function<void()>& f) {
  const auto anon = [] {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
      if (line.starts_with("RssAnon:")) return std::stoll(line.substr(8)) * 1024;
    return -1LL;
  };
  const int64_t before = anon();
  std::atomic<bool> done{false};
  std::atomic<int64_t> peak{before};
  std::thread watch([&] {
    while (!done) {
      peak = std::max<int64_t>(peak, anon());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  f();
  done = true;
  watch.join();
  return before < 0 ? -1 : peak - before;
}

const char* kConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "vocab_size": 32000, "tie_word_embeddings": false, "torch_dtype": "float32"})";

TEST(ResourceLimits, AConfigWhoseTensorsCannotBeAllocatedIsRefusedByTheParser) {
  auto cfg = nlohmann::json::parse(kConfig);
  cfg["vocab_size"] = 3200000000000LL;  // a typo'd vocab: past int32 token ids
  std::string e = error_of([&] { sft::parse_llama_config(cfg, "config.json"); });
  EXPECT_NE(e.find("config.json: vocab_size is 3200000000000, expected less than 2^31 (2147483648): a model of that "
                   "size cannot be allocated"), std::string::npos) << e;
  cfg = nlohmann::json::parse(kConfig);
  cfg["hidden_size"] = 1 << 20;  // each dimension representable, the product not allocatable
  cfg["intermediate_size"] = 1 << 22;
  cfg["num_attention_heads"] = 1 << 10;
  cfg["num_key_value_heads"] = 1 << 10;
  cfg["num_hidden_layers"] = 100;
  e = error_of([&] { sft::parse_llama_config(cfg, "config.json"); });
  EXPECT_NE(e.find("parameters (vocab_size 32000, hidden_size 1048576, intermediate_size 4194304, num_hidden_layers "
                   "100): a model of that size cannot be allocated"), std::string::npos) << e;
  // A real large model (LLaMA-3.1-405B's shape) still parses: the limit is far above it.
  cfg = nlohmann::json::parse(kConfig);
  cfg["vocab_size"] = 128256, cfg["hidden_size"] = 16384, cfg["intermediate_size"] = 53248;
  cfg["num_hidden_layers"] = 126, cfg["num_attention_heads"] = 128, cfg["num_key_value_heads"] = 8;
  EXPECT_EQ(error_of([&] { sft::parse_llama_config(cfg, "config.json"); }), "");
}

TEST(ResourceLimits, SftTrainRefusesAnAbsurdConfigWithAMessageNotAnAbort) {
  const fs::path dir = temp_dir("absurd-config");
  auto cfg = nlohmann::json::parse(kConfig);
  cfg["hidden_size"] = 1 << 24;  // 16.7M wide, vocab 32000 x 2: 1.07e12 parameters of embeddings alone
  cfg["intermediate_size"] = 1 << 24;
  cfg["num_attention_heads"] = 1 << 10;
  cfg["num_key_value_heads"] = 1 << 10;
  write_file(dir / "model" / "config.json", cfg.dump());
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    fs::copy_file(fs::path(kLlama2) / f, dir / "model" / f);
  const RunResult r = run("timeout 60 " + kSft + " train --model_name_or_path " + (dir / "model").string() +
                          " --data_path " + dummy_data() + " --output_dir " + (dir / "out").string());
  EXPECT_EQ(r.code, 1) << r.out;  // an sft::Error, not SIGABRT / SIGKILL (134 / 137) nor a timeout (124)
  EXPECT_NE(r.out.find("a model of that size cannot be allocated"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("bad_alloc"), std::string::npos) << r.out;
  fs::remove_all(dir);
}

TEST(ResourceLimits, AMillionTokenSampleIsTruncatedNotFatal) {
  const fs::path p = temp_dir("million") / "one.json";
  Words w(3);
  write_file(p, "[" + sample("Read this: " + w.text(4'500'000), "Done.") + "," + sample("Hi", "Hello!") + "]");
  sft::DataOptions opt;
  opt.model_max_length = 1024;
  opt.memory_budget = int64_t(1) << 30;  // 1 GiB: plenty for one 4.5 MB sample
  const sft::Dataset ds = sft::load_dataset(p.string(), llama2(), opt);
  // The long sample's answer is past the cut: no trainable token left, dropped as FastChat would.
  EXPECT_EQ(ds.stats().samples, 2);
  EXPECT_EQ(ds.stats().dropped, 1);
  EXPECT_EQ(ds.size(), 1);
  ASSERT_EQ(ds.issues().size(), 1u);
  EXPECT_NE(ds.issues()[0].detail.find("no trainable token left after truncation to 1024 tokens"), std::string::npos);
  EXPECT_LT(ds.memory_bytes(), 64 << 10);  // the dataset keeps what it trains on, not the million tokens
  fs::remove_all(p.parent_path());
}

TEST(ResourceLimits, ASampleTooLargeForTheBudgetIsRefusedBeforeItIsParsed) {
  const fs::path p = temp_dir("huge-line") / "data.jsonl";
  {
    Words w(5);
    std::ofstream out(p, std::ios::binary);
    for (int i = 0; i < 10; ++i) out << sample("Question " + std::to_string(i), w.text(200)) << "\n";
    out << sample(w.text(64 << 20), "An answer.") << "\n";  // one 64 MiB line (a 2 GB line, scaled down)
  }
  sft::DataOptions opt;
  opt.memory_budget = int64_t(256) << 20;
  opt.memory_budget_note = "a test's budget";
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = error_of([&] { sft::load_dataset(p.string(), llama2(), opt); });
  const double took = seconds_since(t0);
  std::printf("[ refused ] in %.2f s: %s\n", took, e.c_str());
  EXPECT_NE(e.find(p.string() + ":sample 10 (line 11) is 64.0 MiB of JSON: reading, rendering and tokenizing it whole"),
            std::string::npos) << e;
  EXPECT_NE(e.find("only 256.0 MiB is available (a test's budget). Shorten, split or remove that sample"),
            std::string::npos) << e;
  // Refused after splitting and hashing the file only: a parse and tokenization of 64 MiB takes
  // seconds (about 3 s on one core here), the split a fraction of one.
  EXPECT_LT(took, 2.0);
  fs::remove_all(p.parent_path());
}

// A 2 GiB JSON line (a sparse file: no disk space, no generation time) is refused whatever the
// memory, before it is parsed: it is split and hashed only.
TEST(ResourceLimits, ALineOf2GiBIsRefusedBeforeItIsParsed) {
  const fs::path p = temp_dir("2gib-line") / "data.jsonl";
  const std::string head = sample("Hi", "Hello!") + "\n{\"conversations\": [{\"from\": \"human\", \"value\": \"";
  {
    std::ofstream out(p, std::ios::binary);
    out << head;
  }
  const uintmax_t size = (uintmax_t(1) << 31) + 4096;  // the second line alone is over 2 GiB
  fs::resize_file(p, size);  // zeros, unallocated
  {
    std::fstream out(p, std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(std::streamoff(size - 4));
    out << "\"}]}";  // a line that ends like a sample (its middle is never looked at)
  }
  sft::DataOptions opt;  // no memory budget: the limit holds anyway
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = error_of([&] { sft::load_dataset(p.string(), llama2(), opt); });
  std::printf("[ refused ] in %.2f s: %s\n", seconds_since(t0), e.c_str());
  EXPECT_NE(e.find(p.string() + ":sample 1 (line 2) is 2.0 GiB of JSON: samples of 2 GiB or more cannot be tokenized"),
            std::string::npos) << e;
  EXPECT_LT(seconds_since(t0), 30.0);
  fs::remove_all(p.parent_path());
}

TEST(ResourceLimits, A200MBFileIsRefusedEarlyOverBudgetAndLoadsWithinItsEstimate) {
  const fs::path p = temp_dir("big-file") / "big.json";
  const auto t_gen = std::chrono::steady_clock::now();
  size_t bytes = 0;
  {
    Words w(7);
    std::ofstream out(p, std::ios::binary);
    out << "[";
    for (int i = 0; bytes < (size_t(200) << 20); ++i) {
      const std::string s = sample(w.text(100 + w.below(800)), w.text(300 + w.below(2500)));
      out << (i ? ",\n" : "\n") << s;
      bytes += s.size() + 2;
    }
    out << "]\n";
  }
  std::printf("[ generate ] %.0f MB in %.1f s\n", double(fs::file_size(p)) / 1e6, seconds_since(t_gen));
  sft::DataOptions opt;
  opt.model_max_length = 2048;

  // Over budget: refused after the first chunk, stating the estimate.
  opt.memory_budget = int64_t(64) << 20;
  auto t0 = std::chrono::steady_clock::now();
  const std::string e = error_of([&] { sft::load_dataset(p.string(), llama2(), opt); });
  const double refused_after = seconds_since(t0);
  std::printf("[ refused ] in %.2f s: %s\n", refused_after, e.c_str());
  EXPECT_NE(e.find(p.string() + ": loading it needs about"), std::string::npos) << e;
  EXPECT_NE(e.find("and only 64.0 MiB is available (free memory)"), std::string::npos) << e;
  EXPECT_NE(e.find("tokens after truncation to 2048 (token ids and labels"), std::string::npos) << e;

  // Within budget: it loads, and its tokens and its peak memory stay within the estimate.
  opt.memory_budget = int64_t(8) << 30;
  std::optional<sft::Dataset> ds;
  t0 = std::chrono::steady_clock::now();
  const int64_t peak = peak_anon_growth([&] { ds.emplace(sft::load_dataset(p.string(), llama2(), opt)); });
  const double loaded_after = seconds_since(t0);
  const sft::DataStats& st = ds->stats();
  std::printf("[ memory ] %.0f MB file, %ld samples, %ld tokens: holds %.1f MB, estimated %.1f MB (peak %.1f MB); "
              "peak anonymous memory grew by %.1f MB; refused in %.2f s, loaded in %.2f s\n",
              double(st.bytes) / 1e6, long(st.samples), long(st.tokens), double(st.memory_bytes) / 1e6,
              double(st.estimated_bytes) / 1e6, double(st.estimated_peak_bytes) / 1e6, double(peak) / 1e6,
              refused_after, loaded_after);
  EXPECT_EQ(st.kept, st.samples);
  EXPECT_LE(5 * st.tokens, st.estimated_bytes);        // the estimate covers the tokens it found
  EXPECT_GE(5 * st.tokens, st.estimated_bytes * 8 / 10);  // and is not far above them
  if (peak >= 0) EXPECT_LE(peak, st.estimated_peak_bytes);
  EXPECT_LT(refused_after, loaded_after / 4);
  ds.reset();
  fs::remove_all(p.parent_path());
}

}  // namespace
