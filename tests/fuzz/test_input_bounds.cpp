// The input bounds the fuzz targets rely on (issue 14), checked in the ordinary GCC test build:
// JSON nested deeper than kMaxJsonNesting and YAML configs nested or indented past their limits
// are refused with an error naming the file before nlohmann-json / yaml-cpp see them (a million
// levels would otherwise exhaust the stack in their recursive copy, dump or descent), while the
// depths real files have still load; and the Jinja templates of tests/fuzz/regressions/jinja
// (each once a crash, a hang or an out-of-memory, or a render of many seconds) now end in a clear
// error.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "cli/options.h"
#include "core/check.h"
#include "core/file_util.h"
#include "data/jinja_chat.h"
#include "data/jinja_eval.h"
#include "io/safetensors.h"
#include "model/llama_config.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "sft_bounds_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) std::abort();
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string put(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
    return (path / name).string();
  }
};

std::string nested(size_t depth, const std::string& inner = "1") {
  return std::string(depth, '[') + inner + std::string(depth, ']');
}

// f() must throw sft::Error whose message holds every fragment.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const sft::Error& e) {
    for (const std::string& frag : fragments) EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(InputBounds, JsonNestingDepthCountsBracketsOutsideStrings) {
  EXPECT_EQ(sft::json_nesting_depth("1"), 0u);
  EXPECT_EQ(sft::json_nesting_depth(R"({"a": [1, {"b": []}], "c": {}})"), 4u);
  EXPECT_EQ(sft::json_nesting_depth(R"(["[[[[", "\"[[[", {"k]]": "{{"}])"), 2u);
  EXPECT_EQ(sft::json_nesting_depth(nested(512)), 512u);
  EXPECT_EQ(sft::json_nesting_depth(nested(100000), 600), 601u);  // stops early
}

TEST(InputBounds, StrictJsonRefusesDeepNestingAndKeepsRealDepths) {
  std::string error;
  EXPECT_TRUE(sft::parse_json_strict(nested(sft::kMaxJsonNesting), &error).has_value()) << error;
  EXPECT_FALSE(sft::parse_json_strict(nested(sft::kMaxJsonNesting + 1), &error).has_value());
  EXPECT_NE(error.find("nested more than 512 levels"), std::string::npos) << error;
}

TEST(InputBounds, ModelFilesWithAMillionLevelsAreErrors) {
  TempDir dir;
  const std::string deep = nested(1'000'000);
  // config.json: an unknown key is kept in LlamaConfig::source (a copy of the whole JSON).
  const std::string cfg = dir.put("config.json", R"({"hidden_size": 64, "x": )" + deep + "}");
  expect_error([&] { sft::load_llama_config(cfg); }, {"config.json", "nested more than 512 levels"});
  // A safetensors header.
  const std::string header = R"({"__metadata__": {"x": )" + deep + "}}";
  std::string st(8, '\0');
  for (int i = 0; i < 8; ++i) st[size_t(i)] = char((header.size() >> (8 * i)) & 0xFF);
  const std::string st_path = dir.put("model.safetensors", st + header);
  expect_error([&] { sft::SafetensorsFile f(st_path); }, {"model.safetensors", "nested more than 512 levels"});
  // tokenizer.json and tokenizer_config.json (read leniently, as transformers does).
  dir.put("tokenizer.json", R"({"model": )" + deep + "}");
  expect_error([&] { sft::load_tokenizer(dir.path.string(), sft::TokenizerKind::json); },
               {"tokenizer.json", "nested more than 512 levels"});
  fs::remove(dir.path / "tokenizer.json");
  dir.put("tokenizer_config.json", R"({"chat_template": "x", "y": )" + deep + "}");
  expect_error([&] { sft::find_chat_template(dir.path.string()); }, {"tokenizer_config.json", "nested more than 512"});
}

TEST(InputBounds, ConfigFileNestingAndKeysAreChecked) {
  TempDir dir;
  const auto parse = [&](const std::string& text) {
    const std::string path = dir.put("config.yaml", text);
    std::string a0 = "train", a1 = "--config", a2 = path;
    char* argv[] = {a0.data(), a1.data(), a2.data(), nullptr};
    return sft::parse_train_options(3, argv);
  };
  EXPECT_EQ(parse("learning_rate: 0.001\nseed: 7\n").config.seed, 7);
  expect_error([&] { parse("seed: " + nested(100000) + "\n"); }, {"config.yaml", "nested more than 32 levels"});
  std::string block;  // "- - - ... x": block sequences nested on one line
  for (int i = 0; i < 100000; ++i) block += "- ";
  expect_error([&] { parse(block + "x\n"); }, {"config.yaml", "line 1", "more than 256 columns"});
  expect_error([&] { parse("? [a, b]\n: 1\n"); }, {"config.yaml", "an option name must be a plain name, got a list"});
  expect_error([&] { parse(std::string(size_t(1) << 21, '#')); }, {"config.yaml", "more than the 1048576"});
}

// tokenizer.model with a NUL byte in a piece (fuzz_sentencepiece's finding): the library's trie
// (Darts-clone) threw its own exception from the load; now a named error before it.
TEST(InputBounds, SentencePiecePieceWithANulByteIsAnError) {
  TempDir dir;
  const fs::path input = fs::path(SFT_SOURCE_DIR) / "tests/fuzz/regressions/sentencepiece/piece_starting_with_nul";
  std::ifstream in(input, std::ios::binary);
  ASSERT_TRUE(in) << input;
  dir.put("tokenizer.model", std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
  expect_error([&] { sft::load_tokenizer(dir.path.string(), sft::TokenizerKind::sentencepiece); },
               {"tokenizer.model: piece 1 holds a NUL byte (at byte 0 of its 3)"});
  // One in the middle of a piece (Darts would have cut it short) in a minimal model.
  const std::string piece = std::string("a\0b", 3);
  const std::string sp = std::string("\x0a") + char(2 + piece.size()) + "\x0a" + char(piece.size()) + piece;
  dir.put("tokenizer.model", sp);
  expect_error([&] { sft::load_tokenizer(dir.path.string(), sft::TokenizerKind::sentencepiece); },
               {"piece 0 holds a NUL byte (at byte 1 of its 3)"});
}

// Each regression template of fuzz_jinja, rendered as the target does: an sft::Error naming what
// was too big (before the fixes: stack overflow, use after free, hours or terabytes).
TEST(InputBounds, JinjaRegressionTemplatesEndInClearErrors) {
  const fs::path dir = fs::path(SFT_SOURCE_DIR) / "tests/fuzz/regressions/jinja";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"nested_list_100k_levels", "nested more than 600 levels"},
      {"nested_dict_100k_levels_tojson", "nested more than 600 levels"},
      {"string_doubling_40_times", "exceeded its work budget"},  // before its string reaches 64 MiB
      {"namespace_holds_itself", "a namespace cannot hold a namespace"},
      {"namespace_holds_itself_printed", "a namespace cannot hold a namespace"},
      {"string_repetition_size_overflow", "string repetition too large"},
      {"list_repetition_size_overflow", "list repetition too large"},
      {"join_of_1000_20MB_strings", "list repetition would hold more than"},
      {"list_literal_of_200_20MB_strings", "the strings of a list would be"},
      {"macro_too_many_args_short_name", "macro 'f' takes 0 arguments, 1 given"},
      {"macro_too_many_args_long_name", "macro 'a_very_long_macro_name_beyond_sso' takes 0 arguments"},
      {"range_bounds_overflow", "range() of more than 2^63 items"},
      {"indent_width_2_63", "indent's width would be 9223372036854775807 bytes"},
      {"indent_width_a_float", "an integer was expected here, got a 'float'"},
      // 64 MiB of work per loop step or per value walked, inside every per-value bound
      {"copy_60MB_per_loop_step", "line 3, column 12: the template exceeded its work budget"},
      {"iterate_60M_characters", "exceeded its work budget"},
      {"compare_lists_of_1e10_items", "exceeded its work budget"},
      {"split_into_60M_pieces", "exceeded its work budget"},
      {"list_of_60M_characters", "exceeded its work budget"},
      // a loop step per line / code point (fuzz_jinja: 15-32 s under ASan within the budget of bytes)
      {"indent_of_60M_lines", "exceeded its work budget"},
      {"indent_of_60M_lines_slow", "exceeded its work budget"},
      {"replace_empty_in_60MB", "exceeded its work budget"},
      {"replace_empty_in_60MB_timeout", "exceeded its work budget"},
  };
  for (const auto& [name, fragment] : cases) {
    SCOPED_TRACE(name);
    std::ifstream in(dir / name, std::ios::binary);
    ASSERT_TRUE(in) << (dir / name);
    const std::string source((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    expect_error([&] { sft::jinja::Template(source).render({}); }, {fragment});
  }
}
