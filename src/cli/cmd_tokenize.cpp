// `sft tokenize`: encodes text with a model directory's tokenizer and prints the ids, one line of
// space-separated ids per input; with --decode, reads lines of ids and prints the text (newlines
// and backslashes escaped as \n and \\, so each input stays one line and can be fed back).
// Inputs come from --text (taken literally) or --input FILE (one per line, \n \t \r \\ escapes).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "core/check.h"
#include "tokenizer/tokenizer.h"

namespace sft {

namespace {

std::string unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    if (c == 'n') out += '\n';
    else if (c == 't') out += '\t';
    else if (c == 'r') out += '\r';
    else if (c == '\\') out += '\\';
    else out += '\\', out += c;  // unknown escapes stay as written
  }
  return out;
}

std::string escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  return out;
}

bool parse_bool(const std::string& flag, const std::string& v) {
  if (v == "True" || v == "true" || v == "1") return true;
  if (v == "False" || v == "false" || v == "0") return false;
  fail("tokenize", "{} expects True or False, got '{}'", flag, v);
}

std::vector<int32_t> parse_ids(std::string_view line, size_t line_no) {
  std::vector<int32_t> ids;
  std::istringstream in{std::string(line)};
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < INT32_MIN || v > INT32_MAX)
      fail("tokenize", "input {}: '{}' is not a token id", line_no, word);
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

}  // namespace

int run_tokenize(int argc, char** argv) {
  CLI::App app{"sft tokenize: encode text to token ids, or decode ids (--decode) to text", "sft tokenize"};
  std::string tokenizer_dir, text, input_path, add_special = "True", kind_name = "auto";
  bool decode = false, skip_special = false;
  app.add_option("--tokenizer", tokenizer_dir, "model directory with tokenizer.model and/or tokenizer.json")->required();
  auto* text_opt = app.add_option("--text", text, "one input, taken literally");
  auto* input_opt = app.add_option("--input", input_path, "file with one input per line (\\n \\t \\r \\\\ escapes)");
  text_opt->excludes(input_opt);
  app.add_option("--add_special_tokens", add_special, "add BOS/EOS as the tokenizer does (True | False)")
      ->capture_default_str();
  app.add_flag("--decode", decode, "inputs are lines of space-separated ids; print their text");
  app.add_flag("--skip_special_tokens", skip_special, "with --decode: leave special tokens out of the text");
  app.add_option("--tokenizer_kind", kind_name, "auto (tokenizer.model first, as FastChat) | sentencepiece | json")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (text_opt->count() == 0 && input_opt->count() == 0) fail("tokenize", "give --text STRING or --input FILE");
  const bool add_special_tokens = parse_bool("--add_special_tokens", add_special);
  auto tokenizer = load_tokenizer(tokenizer_dir, parse_tokenizer_kind(kind_name));

  std::vector<std::string> inputs;
  if (text_opt->count()) {
    inputs.push_back(text);
  } else {
    std::ifstream in(input_path, std::ios::binary);
    if (!in) fail("tokenize", "{}: cannot open", input_path);
    std::string line;
    while (std::getline(in, line)) inputs.push_back(unescape(line));
  }

  std::string out;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (decode) {
      std::vector<int32_t> ids = parse_ids(inputs[i], i + 1);
      out += escape(tokenizer->decode(ids, skip_special));
    } else {
      std::vector<int32_t> ids = tokenizer->encode(inputs[i], add_special_tokens);
      for (size_t k = 0; k < ids.size(); ++k) {
        if (k) out += ' ';
        fmt::format_to(std::back_inserter(out), "{}", ids[k]);
      }
    }
    out += '\n';
    if (out.size() > (1 << 20)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace sft
