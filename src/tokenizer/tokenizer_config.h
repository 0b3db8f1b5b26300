// What the tokenizers read from an HF model directory besides the model file:
// tokenizer_config.json, special_tokens_map.json (overrides the special tokens, as
// transformers' from_pretrained) and added_tokens.json; plus the added-token matcher both
// tokenizers use to split special tokens out of raw text (leftmost-longest, as HF's Trie and
// the aho-corasick LeftmostLongest matcher of `tokenizers`).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sft {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

struct TokenizerConfig {
  std::string tokenizer_class;
  // bos/eos/unk/pad: `given` when the key is present (a null value gives no content).
  struct Special {
    bool given = false;
    std::optional<std::string> content;
  };
  Special bos_token, eos_token, unk_token, pad_token;
  std::vector<std::string> additional_special_tokens;
  std::optional<bool> add_bos_token, add_eos_token, legacy, add_prefix_space;
  // added_tokens_decoder entries (with ids) then added_tokens.json entries not already there;
  // attributes of bos/eos/unk/pad given as AddedToken dicts, keyed by content.
  std::vector<AddedToken> added_tokens;
  std::vector<AddedToken> special_token_attrs;
};

// Reads the config files of `dir` that exist (none is fine: all fields stay empty).
TokenizerConfig read_tokenizer_config(const std::string& dir);

// Leftmost-longest matcher over a fixed set of strings (byte trie).
class TokenMatcher {
 public:
  // `value` (>= 0) is what find() reports for this pattern. Empty patterns are ignored.
  void add(std::string_view pattern, int32_t value);
  bool empty() const { return nodes_.size() <= 1; }

  struct Match {
    size_t start = 0, end = 0;
    int32_t value = -1;
  };
  // First match at or after `from` (earliest start, longest at that start); value -1 if none.
  Match find(std::string_view text, size_t from) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
    int32_t value = -1;
  };
  int32_t child(int32_t node, unsigned char c) const;
  std::vector<Node> nodes_ = std::vector<Node>(1);
  bool first_byte_[256] = {};
};

}  // namespace sft
