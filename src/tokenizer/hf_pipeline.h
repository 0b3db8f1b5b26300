// The text stages of a tokenizer.json around the model, built from their JSON objects as HF
// tokenizers 0.19 defines them. Supported: normalizers Sequence, Prepend, Replace, Strip;
// pre-tokenizers Sequence, Split, ByteLevel, Metaspace; decoders Sequence, ByteLevel, Replace,
// ByteFallback, Fuse, Strip, Metaspace; post-processors TemplateProcessing (single), ByteLevel,
// Sequence. Anything else fails at load with a clear message rather than tokenizing differently.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace sft {

class Regex;

// A literal string or a regex, as tokenizers' Pattern ({"String": s} | {"Regex": r}).
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;  // set for {"Regex": ...}
  // Non-overlapping matches (start, end) of the pattern in `s`.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
};

struct NormalizerStep {
  enum class Kind { prepend, replace, strip } kind;
  std::string text;  // prepend: what; replace: the replacement
  Pattern pattern;   // replace
  bool strip_left = false, strip_right = false;
};

class Normalizer {
 public:
  Normalizer() = default;
  Normalizer(const nlohmann::json& j, const std::string& where);  // j may be null
  bool empty() const { return steps_.empty(); }
  std::string apply(std::string_view s) const;

 private:
  void add(const nlohmann::json& j, const std::string& where);
  std::vector<NormalizerStep> steps_;
};

// One piece of text between pre-tokenizer stages; `first` marks the piece whose original
// offset is 0 (Metaspace prepend_scheme "first").
struct PreToken {
  std::string text;
  bool first = false;
};

class PreTokenizer {
 public:
  PreTokenizer() = default;
  PreTokenizer(const nlohmann::json& j, const std::string& where);  // j may be null
  // Splits one normalized segment into pre-tokens (appended to `out`).
  void apply(std::string_view s, bool first, std::vector<PreToken>& out) const;
  bool has_regex_split() const { return has_regex_split_; }

 private:
  struct Step {
    enum class Kind { split, byte_level, metaspace } kind;
    Pattern pattern;                // split
    std::string behavior;           // split: removed|isolated|merged_with_previous|merged_with_next|contiguous
    bool invert = false;            // split
    bool add_prefix_space = false;  // byte_level
    bool use_regex = true;          // byte_level (GPT-2 regex)
    std::string replacement;        // metaspace
    std::string prepend_scheme;     // metaspace: always|first|never
    bool split_on_replacement = true;
  };
  void add(const nlohmann::json& j, const std::string& where);
  void run_step(const Step& step, std::vector<PreToken>& pieces) const;
  std::vector<Step> steps_;
  bool has_regex_split_ = false;
};

class Decoder {
 public:
  Decoder() = default;
  Decoder(const nlohmann::json& j, const std::string& where);  // j may be null: tokens joined by " "
  std::string apply(std::vector<std::string> tokens) const;

 private:
  struct Step {
    enum class Kind { byte_level, replace, byte_fallback, fuse, strip, metaspace } kind;
    std::string from, to;  // replace; metaspace: from = replacement
    std::string content;   // strip
    int start = 0, stop = 0;
    bool prepend = true;   // metaspace: prepend_scheme != never
  };
  void add(const nlohmann::json& j, const std::string& where);
  std::vector<Step> steps_;
  bool none_ = true;
};

// Post-processor, reduced to what a single sequence gets: ids before and after it.
struct PostProcessor {
  std::vector<int32_t> prefix, suffix;
  PostProcessor() = default;
  PostProcessor(const nlohmann::json& j, const std::string& where);  // j may be null
};

}  // namespace sft
