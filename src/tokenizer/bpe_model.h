// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}), as HF tokenizers 0.19
// models/bpe: vocab, merges ("a b" strings or ["a", "b"] pairs), unk_token/fuse_unk,
// byte_fallback (<0xXX> pieces), ignore_merges. Not supported: dropout, continuing_subword_prefix,
// end_of_word_suffix (load fails with a clear message).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/word_cache.h"

namespace sft {

using TokenIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // `model` is the tokenizer.json "model" object; `where` names the file in errors.
  BpeModel(const nlohmann::json& model, const std::string& where);

  // Appends the ids of one pre-token. Thread-safe (results of short words are cached).
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // nullptr when no token has this id
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }  // max id + 1
  std::optional<std::string> unk_token() const { return unk_token_; }
  bool ignore_merges() const { return ignore_merges_; }
  const TokenIdMap& vocab() const { return vocab_; }

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  int32_t char_id(std::string_view ch) const;

  TokenIdMap vocab_;
  std::vector<std::string> tokens_;  // id -> token, "" for holes
  std::vector<uint8_t> has_token_;
  struct Merge {
    int32_t rank, new_id;
  };
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  std::vector<int32_t> char_ids_;               // code point < 0x800 -> its one-character token, or -1
  int32_t byte_ids_[256];                       // <0xXX> tokens, -1 when absent
  std::optional<std::string> unk_token_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  WordCache cache_;
};

}  // namespace sft
