// Labels by construction: each rendered segment is tokenized in the context it has in the full
// text and the pieces are concatenated, each token marked trainable or not by its segment. No
// re-tokenize-and-align step, so no "tokenization mismatch" (FastChat train.py preprocess()).
// Reference for the ids: HF `tokenizer(rendered_text).input_ids` (BOS from the tokenizer).
#pragma once
#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace sft {

struct EncodedSample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> train;  // (ids.size()) 1 where the token is a label (unshifted)
};

// How a segment that follows plain text is tokenized "in context": the text is encoded behind an
// anchor (a newline, or "a" when the segment starts with a newline) and the anchor's ids are
// removed. This reproduces the tokenizer's rule for text that does not open the sequence (no
// SentencePiece dummy prefix, but a leading space kept as "▁"). Segment starts are always either
// the start of the text, right after a special token, or (the templates' choice) where the
// previous text ends in a fixed marker such as "ASSISTANT:" or "\n"; for LLaMA SentencePiece
// models no token crosses these points, so the ids equal those of the whole rendered text.
class SampleEncoder {
 public:
  explicit SampleEncoder(const Tokenizer& tok);

  // Tokens of the segments: the tokenizer's own prefix (BOS), unless the text already starts with
  // the BOS token's text (llama-3's "<|begin_of_text|>"), then each segment, then the tokenizer's
  // suffix (EOS when add_eos_token). Prefix and suffix are not trainable.
  void encode(std::span<const Segment> segs, EncodedSample& out) const;

  // Segments for which no anchor kept its own ids and which were encoded as a sequence start
  // (expected 0; a test checks it on real data).
  int64_t fallbacks() const { return fallbacks_.load(std::memory_order_relaxed); }

  const Tokenizer& tokenizer() const { return tok_; }

 private:
  std::vector<int32_t> encode_after_text(std::string_view text) const;
  std::vector<int32_t> encode_after_special(int32_t special, std::string_view text) const;

  struct Anchor {
    std::string text;
    std::vector<int32_t> ids;
  };
  const Tokenizer& tok_;
  std::vector<int32_t> prefix_, suffix_;
  std::string bos_text_;
  Anchor newline_, letter_;
  mutable std::atomic<int64_t> fallbacks_{0};
};

// Unshifted labels of an encoded sample: id where trainable, -100 elsewhere.
std::vector<int32_t> labels_of(const EncodedSample& s);

}  // namespace sft
