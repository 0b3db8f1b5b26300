// The tokenizer interface and the loader that picks an implementation from a model directory:
// tokenizer.model (SentencePiece, HF slow LlamaTokenizer semantics) or tokenizer.json (HF fast
// `tokenizers` pipeline, BPE). Reference: transformers 4.40 LlamaTokenizer, tokenizers 0.19.
// Not here: chat templates, truncation, padding (data/), and decode's clean_up_tokenization_spaces.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sft {

enum class TokenizerKind {
  auto_,          // tokenizer.model when present (FastChat's use_fast=False), else tokenizer.json
  sentencepiece,  // tokenizer.model
  json,           // tokenizer.json
};

// All methods are const and safe to call from many threads at once.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text (valid UTF-8, else sft::Error) -> ids, as HF `tokenizer(text, add_special_tokens=...)
  // .input_ids`. Special and added tokens written inside the text are split out as their ids.
  // add_special_tokens adds what the tokenizer adds around a sequence (BOS for LLaMA).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;

  // Ids -> text, as HF `decode(ids, skip_special_tokens, clean_up_tokenization_spaces=False)`.
  // An id outside [0, vocab_size()) is an sft::Error.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const = 0;

  // Special token ids from tokenizer_config.json / special_tokens_map.json; -1 when none.
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t unk_id() const = 0;
  virtual int32_t pad_id() const = 0;

  // Size of the id space: model vocabulary plus added tokens (HF `len(tokenizer)`).
  virtual int64_t vocab_size() const = 0;

  // Token string (a SentencePiece piece, a byte-level BPE token, or an added token) <-> id.
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int32_t id) const = 0;  // sft::Error when out of range

  // True for the ids that decode(..., skip_special_tokens=true) drops.
  virtual bool is_special(int32_t id) const = 0;

  // sentencepiece or json.
  virtual TokenizerKind kind() const = 0;
};

// Loads the tokenizer of a model directory. With both files present, auto_ follows FastChat
// (use_fast=False: tokenizer.model); `prefer` picks one explicitly. Errors: sft::Error
// "[tokenizer] <path>: ...".
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, TokenizerKind prefer = TokenizerKind::auto_);

// "auto" | "sentencepiece" | "json" -> kind (sft::Error otherwise).
TokenizerKind parse_tokenizer_kind(std::string_view name);

// Names (not paths) of the tokenizer files present in `dir`, in a fixed order: tokenizer.model,
// tokenizer.json, tokenizer_config.json, special_tokens_map.json, added_tokens.json,
// chat_template.jinja. What `sft init` and checkpoint saving copy next to the weights.
std::vector<std::string> tokenizer_files(const std::string& dir);

}  // namespace sft
