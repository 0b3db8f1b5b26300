// Encode throughput on one thread, ~10 MB of real chat text (../shared data when present, else
// the test corpus repeated), one encode call per message as the data pipeline does. Disabled by
// default; run: test_tokenizer --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
#include <gtest/gtest.h>

#include <chrono>

#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

using namespace tok_test;

namespace {

std::vector<std::string> texts_of_about(size_t bytes) {
  std::vector<std::string> base;
  if (have_shared()) {
    for (const auto& s : nlohmann::json::parse(read_file(kShared + "/data/dummy_conversation.json")))
      for (const auto& m : s["conversations"]) base.push_back(m["value"]);
    for (const auto& s : nlohmann::json::parse(read_file(kShared + "/data/alpaca_en_demo.json")))
      for (const char* k : {"instruction", "input", "output"}) base.push_back(s[k]);
  } else {
    base = nlohmann::json::parse(read_file(kRoot + "/tests/tokenizer/corpus.json")).get<std::vector<std::string>>();
  }
  std::vector<std::string> out;
  size_t total = 0;
  for (size_t i = 0; total < bytes; ++i) {
    out.push_back(base[i % base.size()]);
    total += out.back().size();
  }
  return out;
}

void measure(const std::string& label, const std::string& dir, sft::TokenizerKind kind,
             const std::vector<std::string>& texts) {
  auto tok = sft::load_tokenizer(dir, kind);
  size_t bytes = 0, tokens = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (const std::string& t : texts) {
    bytes += t.size();
    tokens += tok->encode(t, true).size();
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ %-22s ] %6.1f MB in %.2f s: %6.2f MB/s, %5.2f M tokens/s\n", label.c_str(), bytes / 1e6, s,
              bytes / 1e6 / s, tokens / 1e6 / s);
}

TEST(Tokenizer, DISABLED_Throughput) {
  const auto texts = texts_of_about(10'000'000);
  measure("llama2 tokenizer.model", kShipped, sft::TokenizerKind::sentencepiece, texts);
  const auto& ref = reference();
  if (!ref.dir) GTEST_SKIP() << "tokenizer.json timings need the HF reference: " << ref.why;
  measure("llama2 legacy .model", (*ref.dir / "tok" / "llama2-legacy").string(), sft::TokenizerKind::sentencepiece, texts);
  measure("llama2 tokenizer.json", (*ref.dir / "tok" / "llama2-fast").string(), sft::TokenizerKind::json, texts);
  if (reference_has("llama3"))
    measure("llama3 tokenizer.json", (*ref.dir / "tok" / "llama3").string(), sft::TokenizerKind::json, texts);
}

}  // namespace
