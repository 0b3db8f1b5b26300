// A compiled PCRE2 regex (UTF + Unicode properties, JIT when available) for the tokenizer.json
// Split pre-tokenizer and Replace normalizer. HF tokenizers uses Oniguruma; for the patterns
// LLaMA-family tokenizers ship (\p{L}, \p{N}, \s, lookahead, (?i:...)) the two agree.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sft {

class Regex {
 public:
  explicit Regex(const std::string& pattern);  // sft::Error "[tokenizer] regex ..." when invalid
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches (start, end) in byte offsets, left to right, as onig's find_iter.
  // `s` must be valid UTF-8. Thread-safe.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

  // Whether the regex matches at the very start of `s` (for single-character class tests).
  bool matches_at_start(std::string_view s) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8
  std::string pattern_;
};

}  // namespace sft
