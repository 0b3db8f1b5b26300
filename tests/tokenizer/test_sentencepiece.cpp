// The shipped LLaMA-2 tokenizer (assets/tokenizer/llama2, legacy=false) without any reference
// library: facts documented in ../shared/docs/reference/fastchat-sft.md §1.2 (ids measured with
// HF), the legacy rule expressed through piece ids, round trips, thread safety, loader choices
// and errors. These never skip.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

using namespace tok_test;
using Ids = std::vector<int32_t>;

namespace {

// A copy of the shipped tokenizer with tokenizer_config.json edited (`legacy` set or removed).
std::string shipped_variant(const std::string& name, const nlohmann::json& legacy) {
  fs::path dir = kBuildDir / "tokenizer-test" / name;
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.model", "special_tokens_map.json"})
    fs::copy_file(fs::path(kShipped) / f, dir / f, fs::copy_options::overwrite_existing);
  auto cfg = nlohmann::json::parse(read_file(fs::path(kShipped) / "tokenizer_config.json"));
  if (legacy.is_null()) cfg.erase("legacy");
  else cfg["legacy"] = legacy;
  std::ofstream(dir / "tokenizer_config.json") << cfg.dump(2);
  return dir.string();
}

std::vector<std::string> corpus() {
  return nlohmann::json::parse(read_file(kRoot + "/tests/tokenizer/corpus.json")).get<std::vector<std::string>>();
}

TEST(SentencePiece, ShippedTokenizerBasics) {
  auto tok = sft::load_tokenizer(kShipped);
  EXPECT_EQ(tok->kind(), sft::TokenizerKind::sentencepiece);
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 0);
  EXPECT_EQ(tok->pad_id(), -1);
  EXPECT_EQ(tok->token_to_id("<s>"), 1);
  EXPECT_EQ(tok->token_to_id("</s>"), 2);
  EXPECT_EQ(tok->token_to_id("\xE2\x96\x81"), 29871);  // "▁", FastChat's -2 comment
  EXPECT_EQ(tok->token_to_id("no such piece"), std::nullopt);
  EXPECT_EQ(tok->id_to_token(2), "</s>");
  EXPECT_TRUE(tok->is_special(1) && tok->is_special(2) && tok->is_special(0));
  EXPECT_FALSE(tok->is_special(29871));
  EXPECT_EQ(tok->encode("", true), Ids{1});
  EXPECT_EQ(tok->encode("", false), Ids{});
}

// fastchat-sft.md §1.2: "</s>" then "USER" is [11889] in context (non-legacy), "▁US","ER" =
// [3148, 1001] standalone; the Vicuna worked example's tokens (legacy).
TEST(SentencePiece, FastChatDocumentedIds) {
  auto nonlegacy = sft::load_tokenizer(kShipped);
  EXPECT_EQ(nonlegacy->encode("USER", false), (Ids{3148, 1001}));
  EXPECT_EQ(nonlegacy->encode("</s>USER", false), (Ids{2, 11889}));
  auto legacy = sft::load_tokenizer(shipped_variant("legacy", true));
  EXPECT_EQ(legacy->encode("</s>USER", false), (Ids{2, 3148, 1001}));

  const std::string system =
      "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
      "detailed, and polite answers to the user's questions.";
  const Ids ids = legacy->encode(system + " USER: Hello! ASSISTANT: Hi!</s>", true);
  const Ids head{1, 319, 13563};
  const Ids tail{29889, 3148, 1001, 29901, 15043, 29991, 319, 1799, 9047, 13566, 29901, 6324, 29991, 2};
  ASSERT_GT(ids.size(), head.size() + tail.size());
  EXPECT_EQ(Ids(ids.begin(), ids.begin() + 3), head);
  EXPECT_EQ(Ids(ids.end() - static_cast<ptrdiff_t>(tail.size()), ids.end()), tail);
}

// The legacy flag, stated through piece ids: text after a special token gets the dummy "▁"
// only in legacy mode; a missing `legacy` key means legacy (as HF).
TEST(SentencePiece, LegacyFlagAfterSpecialTokens) {
  auto nonlegacy = sft::load_tokenizer(kShipped);
  auto legacy = sft::load_tokenizer(shipped_variant("legacy", true));
  auto nokey = sft::load_tokenizer(shipped_variant("nolegacykey", nullptr));
  const int32_t a = *nonlegacy->token_to_id("\xE2\x96\x81" "a"), b = *nonlegacy->token_to_id("b"),
                sb = *nonlegacy->token_to_id("\xE2\x96\x81" "b"), sp = *nonlegacy->token_to_id("\xE2\x96\x81");
  EXPECT_EQ(legacy->encode("a</s>b", false), (Ids{a, 2, sb}));
  EXPECT_EQ(nokey->encode("a</s>b", false), (Ids{a, 2, sb}));
  EXPECT_EQ(nonlegacy->encode("a</s>b", false), (Ids{a, 2, b}));
  EXPECT_EQ(legacy->encode("a</s> b", false), (Ids{a, 2, sp, sb}));
  EXPECT_EQ(nonlegacy->encode("a</s> b", false), (Ids{a, 2, sb}));
  // Special tokens written in the text are their ids, at the start too.
  EXPECT_EQ(nonlegacy->encode("<s>", true), (Ids{1, 1}));
  EXPECT_EQ(nonlegacy->encode("<unk></s>", false), (Ids{0, 2}));
  EXPECT_EQ(legacy->decode(Ids{1, a, 2, sb}), "<s> a</s>b");  // HF's legacy decode inserts a space
  EXPECT_EQ(nonlegacy->decode(Ids{1, a, 2, sb}, true), "a b");
}

TEST(SentencePiece, DecodeRoundTripsTheCorpus) {
  auto tok = sft::load_tokenizer(kShipped);
  size_t checked = 0;
  for (const std::string& text : corpus()) {
    // Non-legacy HF turns a literal "▁" into a space, and decodes "<s>x" as "<s> x".
    if (text.find("\xE2\x96\x81") != std::string::npos || text.starts_with("<s>H")) continue;
    EXPECT_EQ(tok->decode(tok->encode(text, false)), text) << show(text);
    const bool has_special = text.find("<s>") != std::string::npos || text.find("</s>") != std::string::npos ||
                             text.find("<unk>") != std::string::npos;
    if (!has_special) {
      EXPECT_EQ(tok->decode(tok->encode(text, true), true), text) << show(text);
    }
    ++checked;
  }
  EXPECT_GT(checked, 90u);
}

TEST(SentencePiece, ThreadSafeEncode) {
  auto tok = sft::load_tokenizer(kShipped);
  const auto texts = corpus();
  std::vector<Ids> serial;
  for (const auto& t : texts) serial.push_back(tok->encode(t, true));
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([&, w] {
      for (int rep = 0; rep < 5; ++rep)
        for (size_t i = 0; i < texts.size(); ++i) bad[w] += tok->encode(texts[i], true) != serial[i];
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad, std::vector<int>(4, 0));
}

TEST(SentencePiece, LongInputs) {
  auto tok = sft::load_tokenizer(kShipped);
  for (const std::string& unit : {std::string("a"), std::string(" "), std::string("\n"), std::string("ab "),
                                  std::string("\xE4\xBD\xA0")}) {
    std::string text;
    while (text.size() < (1 << 20)) text += unit;
    auto t0 = std::chrono::steady_clock::now();
    Ids ids = tok->encode(text, false);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ 1 MiB of %s ] %.2f s\n", show(unit).c_str(), s);
    EXPECT_LT(s, 20.0) << show(unit);
    EXPECT_EQ(tok->decode(ids), text) << show(unit);
  }
}

TEST(SentencePiece, Errors) {
  auto tok = sft::load_tokenizer(kShipped);
  EXPECT_THROW(tok->encode("bad \xC3\x28 utf8", true), sft::Error);
  EXPECT_THROW(tok->decode(Ids{5, 32000}), sft::Error);
  EXPECT_THROW(tok->decode(Ids{-1}), sft::Error);
  EXPECT_THROW(tok->id_to_token(40000), sft::Error);
  try {
    sft::load_tokenizer(kShipped, sft::TokenizerKind::json);
    ADD_FAILURE() << "no tokenizer.json, yet loaded";
  } catch (const sft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[tokenizer] " + kShipped + ": no tokenizer.json"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sft::load_tokenizer("/nonexistent/dir"), sft::Error);
  EXPECT_THROW(sft::parse_tokenizer_kind("fast"), sft::Error);
  fs::path dir = kBuildDir / "tokenizer-test" / "garbage";
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.model") << "not a model";
  EXPECT_THROW(sft::load_tokenizer(dir.string()), sft::Error);
}

TEST(SentencePiece, TokenizerFiles) {
  EXPECT_EQ(sft::tokenizer_files(kShipped),
            (std::vector<std::string>{"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"}));
  EXPECT_TRUE(sft::tokenizer_files("/nonexistent").empty());
}

}  // namespace
