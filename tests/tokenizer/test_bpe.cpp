// tokenizer.json features on small hand-built files whose expected ids follow from the BPE rules
// by hand (no reference library needed): both merge encodings, ignore_merges, added tokens with
// lstrip/rstrip/single_word, byte fallback, unk fusing, decoders, load errors, and long inputs
// through the LLaMA-3 split regex (Meta's 25,000-character run guard).
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

using namespace tok_test;
using nlohmann::json;
using Ids = std::vector<int32_t>;

namespace {

constexpr const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string write_tokenizer(const std::string& name, const json& tokenizer, const json& config = nullptr) {
  fs::path dir = kBuildDir / "tokenizer-test" / name;
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << tokenizer.dump();
  if (!config.is_null()) std::ofstream(dir / "tokenizer_config.json") << config.dump();
  return dir.string();
}

// Byte-level BPE: ids 0..255 are the bytes (GPT-2 map), then "he" 256, "ll" 257, "hell" 258,
// "hello" 259, "xyz" 260 (no merge builds it); added: <|eot|> 261 (special), <tool> 262 (strips
// spaces), xyzzy 263 (single word).
json byte_level_tokenizer(bool pair_merges, bool ignore_merges) {
  const auto& bl = sft::utf8::byte_level_map();
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[bl.byte_to_text[b]] = b;
  vocab["he"] = 256, vocab["ll"] = 257, vocab["hell"] = 258, vocab["hello"] = 259, vocab["xyz"] = 260;
  json merges = json::array();
  for (auto [a, b] : {std::pair{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}})
    merges.push_back(pair_merges ? json::array({a, b}) : json(std::string(a) + " " + b));
  json added = json::array({
      {{"id", 261}, {"content", "<|eot|>"}, {"single_word", false}, {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}},
      {{"id", 262}, {"content", "<tool>"}, {"single_word", false}, {"lstrip", true}, {"rstrip", true}, {"normalized", false}, {"special", false}},
      {{"id", 263}, {"content", "xyzzy"}, {"single_word", true}, {"lstrip", false}, {"rstrip", false}, {"normalized", true}, {"special", false}},
  });
  return {
      {"version", "1.0"}, {"added_tokens", added}, {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", json::array({
          {{"type", "Split"}, {"pattern", {{"Regex", kLlama3Split}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}}},
      {"post_processor", {{"type", "TemplateProcessing"},
          {"single", json::array({{{"SpecialToken", {{"id", "<|eot|>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
          {"special_tokens", {{"<|eot|>", {{"id", "<|eot|>"}, {"ids", {261}}, {"tokens", {"<|eot|>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"unk_token", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                 {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}}},
  };
}

TEST(Bpe, ByteLevelMergesAndAddedTokens) {
  for (bool pairs : {false, true}) {
    SCOPED_TRACE(pairs ? "[\"a\", \"b\"] merges" : "\"a b\" merges");
    auto tok = sft::load_tokenizer(write_tokenizer(pairs ? "bl-pairs" : "bl-strings", byte_level_tokenizer(pairs, true)));
    EXPECT_EQ(tok->kind(), sft::TokenizerKind::json);
    EXPECT_EQ(tok->vocab_size(), 264);
    EXPECT_EQ(tok->encode("hello", false), Ids{259});
    EXPECT_EQ(tok->encode("hello hello", true), (Ids{261, 259, ' ', 259}));  // " hello" = Ġ + hello
    EXPECT_EQ(tok->encode("helo", false), (Ids{256, 'l', 'o'}));
    EXPECT_EQ(tok->encode("xyz", false), Ids{260});                          // ignore_merges: whole word in vocab
    EXPECT_EQ(tok->encode("hi<|eot|>hello", false), (Ids{'h', 'i', 261, 259}));
    EXPECT_EQ(tok->encode("a  <tool>  b", false), (Ids{'a', 262, 'b'}));     // lstrip + rstrip eat the spaces
    EXPECT_EQ(tok->encode("axyzzy", false), (Ids{'a', 'x', 'y', 'z', 'z', 'y'}));  // single_word: not inside a word
    EXPECT_EQ(tok->encode("a xyzzy.", false), (Ids{'a', ' ', 263, '.'}));
    EXPECT_EQ(tok->decode(Ids{261, 259, ' ', 259}), "<|eot|>hello hello");
    EXPECT_EQ(tok->decode(Ids{261, 259, ' ', 259}, true), "hello hello");
    EXPECT_EQ(tok->decode(Ids{0xC3, 0x28}), "\xEF\xBF\xBD(");  // invalid UTF-8 bytes decode lossily
    EXPECT_TRUE(tok->is_special(261));
    EXPECT_FALSE(tok->is_special(262));
  }
  auto strict = sft::load_tokenizer(write_tokenizer("bl-no-ignore", byte_level_tokenizer(false, false)));
  EXPECT_EQ(strict->encode("xyz", false), (Ids{'x', 'y', 'z'}));
}

// SentencePiece-style tokenizer.json: byte fallback, unk, Prepend/Replace normalizer, the
// Replace/ByteFallback/Fuse/Strip decoder, and tokenizer_config.json special tokens.
TEST(Bpe, ByteFallbackAndSentencePieceStyle) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 3 + b;
  vocab["\xE2\x96\x81"] = 259, vocab["a"] = 260, vocab["\xE2\x96\x81" "a"] = 261;
  json tokenizer = {
      {"added_tokens", json::array({{{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                                    {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}})},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", json::array({
          {{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"decoder", {{"type", "Sequence"}, {"decoders", json::array({
          {{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
          {{"type", "ByteFallback"}}, {{"type", "Fuse"}}, {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                 {"vocab", vocab}, {"merges", json::array({"\xE2\x96\x81 a"})}}},
  };
  json config = {{"tokenizer_class", "LlamaTokenizerFast"}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
                 {"unk_token", "<unk>"}, {"add_bos_token", true}, {"add_eos_token", true}};
  auto tok = sft::load_tokenizer(write_tokenizer("spm-style", tokenizer, config));
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 0);
  // "a é" -> "▁a▁é": é is not in the vocabulary, so its bytes C3 A9 become <0xC3> <0xA9>.
  EXPECT_EQ(tok->encode("a \xC3\xA9", false), (Ids{261, 259, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok->encode("a", true), (Ids{1, 261, 2}));  // LlamaTokenizerFast: add_bos + add_eos
  EXPECT_EQ(tok->decode(Ids{1, 261, 259, 3 + 0xC3, 3 + 0xA9, 2}, true), "a \xC3\xA9");
  EXPECT_EQ(tok->decode(Ids{261, 3 + 0xC3}), "a\xEF\xBF\xBD");  // a lone lead byte is one U+FFFD

  tokenizer["model"]["byte_fallback"] = false;  // now unknown characters are <unk>, fused
  auto unk = sft::load_tokenizer(write_tokenizer("spm-style-unk", tokenizer));
  EXPECT_EQ(unk->encode("a\xC3\xA9\xC3\xA9", false), (Ids{261, 0}));
}

TEST(Bpe, LoadErrorsNameTheProblem) {
  const auto expect_error = [](const std::string& name, const json& tokenizer, const std::string& fragment) {
    try {
      sft::load_tokenizer(write_tokenizer(name, tokenizer));
      ADD_FAILURE() << name << ": loaded";
    } catch (const sft::Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_TRUE(std::string(e.what()).starts_with("[tokenizer] ")) << e.what();
    }
  };
  json t = byte_level_tokenizer(false, true);
  t["model"]["merges"].push_back("undefined undefined");
  expect_error("bad-merge", t, "merge #4 ('undefined', 'undefined')");
  t = byte_level_tokenizer(false, true);
  t["normalizer"] = {{"type", "NFKC"}};
  expect_error("bad-normalizer", t, "normalizer 'NFKC' is not supported");
  t = byte_level_tokenizer(false, true);
  t["model"]["type"] = "Unigram";
  expect_error("bad-model", t, "model type 'Unigram' is not supported");
  t = byte_level_tokenizer(false, true);
  t["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_error("bad-regex", t, "does not compile");
  fs::path dir = kBuildDir / "tokenizer-test" / "not-json";
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << "{ not json";
  EXPECT_THROW(sft::load_tokenizer(dir.string()), sft::Error);
}

// Long runs through the LLaMA-3 regex and BPE: linear-ish time, exact round trip.
TEST(Bpe, LongInputsStayFast) {
  auto tok = sft::load_tokenizer(write_tokenizer("bl-long", byte_level_tokenizer(false, true)));
  for (const std::string& unit : {std::string("h"), std::string(" "), std::string("\n"), std::string("1"),
                                  std::string("hello "), std::string(" \n"), std::string("!"), std::string("\xE4\xBD\xA0")}) {
    std::string text;
    while (text.size() < (1 << 20)) text += unit;
    auto t0 = std::chrono::steady_clock::now();
    Ids ids = tok->encode(text, false);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ 1 MiB of %s ] %.2f s\n", show(unit).c_str(), s);
    EXPECT_LT(s, 10.0) << show(unit);
    EXPECT_EQ(tok->decode(ids), text) << show(unit);
  }
}

}  // namespace
