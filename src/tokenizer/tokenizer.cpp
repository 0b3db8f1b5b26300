// load_tokenizer: picks tokenizer.model (SentencePiece) or tokenizer.json for a model directory,
// FastChat-style (use_fast=False) when both exist; and the list of tokenizer files to copy.
#include "tokenizer/tokenizer.h"

#include <filesystem>

#include "core/check.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/sentencepiece_tokenizer.h"

namespace sft {

namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, TokenizerKind prefer) {
  if (!fs::is_directory(model_dir)) fail("tokenizer", "{}: not a directory", model_dir);
  const bool has_model = fs::exists(fs::path(model_dir) / "tokenizer.model");
  const bool has_json = fs::exists(fs::path(model_dir) / "tokenizer.json");
  switch (prefer) {
    case TokenizerKind::sentencepiece:
      if (!has_model) fail("tokenizer", "{}: no tokenizer.model (asked for the SentencePiece tokenizer)", model_dir);
      return load_sentencepiece_tokenizer(model_dir);
    case TokenizerKind::json:
      if (!has_json) fail("tokenizer", "{}: no tokenizer.json (asked for the tokenizer.json tokenizer)", model_dir);
      return load_json_tokenizer(model_dir);
    case TokenizerKind::auto_:
      if (has_model) return load_sentencepiece_tokenizer(model_dir);
      if (has_json) return load_json_tokenizer(model_dir);
      fail("tokenizer", "{}: neither tokenizer.model nor tokenizer.json found", model_dir);
  }
  fail("tokenizer", "{}: unknown tokenizer kind", model_dir);
}

TokenizerKind parse_tokenizer_kind(std::string_view name) {
  if (name == "auto") return TokenizerKind::auto_;
  if (name == "sentencepiece") return TokenizerKind::sentencepiece;
  if (name == "json") return TokenizerKind::json;
  fail("tokenizer", "unknown tokenizer kind '{}' (auto | sentencepiece | json)", name);
}

std::vector<std::string> tokenizer_files(const std::string& dir) {
  static const char* kFiles[] = {"tokenizer.model",         "tokenizer.json",    "tokenizer_config.json",
                                 "special_tokens_map.json", "added_tokens.json", "chat_template.jinja"};
  std::vector<std::string> out;
  for (const char* f : kFiles)
    if (fs::is_regular_file(fs::path(dir) / f)) out.push_back(f);
  return out;
}

}  // namespace sft
