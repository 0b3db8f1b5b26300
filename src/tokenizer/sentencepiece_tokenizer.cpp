// SentencePiece tokenizer with HF slow LlamaTokenizer semantics (transformers 4.40
// tokenization_llama.py and PreTrainedTokenizer.tokenize/_decode), step for step:
//  - added tokens (<s>, </s>, <unk>, tokenizer_config added_tokens_decoder, added_tokens.json) are
//    split out of the raw text first (leftmost-longest, then lstrip/rstrip/single_word);
//  - legacy=true: every other segment is encoded with SentencePiece's dummy prefix "▁";
//  - legacy=false: the model is loaded with add_dummy_prefix=false; the whole text gets one "▁"
//    (add_prefix_space), a segment starting with a space is encoded as unk_token + segment with
//    the unk pieces dropped, and a lone leading "▁" before a special token is removed.
// Speed: SentencePiece BPE runs on whole segments in O(n log n) with a large constant (< 1 MB/s).
// When no piece has a "▁" after another character (LLaMA) and the normalizer is the identity, no
// merge crosses the start of a "▁"-run, so segments are cut there into words, encoded with a
// no-dummy-prefix processor and cached: the same ids, several times faster.
#include "tokenizer/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <unordered_map>
#include <unordered_set>

#include "core/check.h"
#include "core/file_util.h"
#include "tokenizer/tokenizer_config.h"
#include "tokenizer/utf8.h"
#include "tokenizer/word_cache.h"

namespace sft {

namespace {

constexpr std::string_view kUnderline = "\xE2\x96\x81";  // "▁", SentencePiece's space

// The few ModelProto fields that decide whether words can be encoded separately (proto2
// defaults); read from the wire format, repeated message fields merged as protobuf does.
struct SpModelInfo {
  int model_type = 1;  // UNIGRAM
  bool treat_whitespace_as_suffix = false;
  std::string normalizer_name;
  bool has_charsmap = false, add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

bool read_varint(std::string_view s, size_t& i, uint64_t& v) {
  v = 0;
  for (int shift = 0; i < s.size() && shift < 64; shift += 7) {
    unsigned char c = static_cast<unsigned char>(s[i++]);
    v |= uint64_t(c & 0x7F) << shift;
    if (!(c & 0x80)) return true;
  }
  return false;
}

// Calls f(field, wire_type, varint value, length-delimited bytes) for each field; false if malformed.
template <typename F>
bool for_each_field(std::string_view s, F&& f) {
  for (size_t i = 0; i < s.size();) {
    uint64_t key, v = 0;
    if (!read_varint(s, i, key)) return false;
    std::string_view bytes;
    switch (key & 7) {
      case 0: if (!read_varint(s, i, v)) return false; break;
      case 1: if (i + 8 > s.size()) return false; i += 8; break;
      case 5: if (i + 4 > s.size()) return false; i += 4; break;
      case 2:
        if (!read_varint(s, i, v) || v > s.size() - i) return false;
        bytes = s.substr(i, v), i += v;
        break;
      default: return false;
    }
    f(key >> 3, key & 7, v, bytes);
  }
  return true;
}

SpModelInfo read_model_info(std::string_view proto) {
  SpModelInfo m;
  for_each_field(proto, [&](uint64_t field, uint64_t, uint64_t, std::string_view bytes) {
    if (field == 2)
      for_each_field(bytes, [&](uint64_t f, uint64_t, uint64_t v, std::string_view) {
        if (f == 3) m.model_type = static_cast<int>(v);
        if (f == 24) m.treat_whitespace_as_suffix = v != 0;
      });
    if (field == 3)
      for_each_field(bytes, [&](uint64_t f, uint64_t, uint64_t v, std::string_view b) {
        if (f == 1) m.normalizer_name = std::string(b);
        if (f == 2) m.has_charsmap = !b.empty();
        if (f == 3) m.add_dummy_prefix = v != 0;
        if (f == 4) m.remove_extra_whitespaces = v != 0;
        if (f == 5) m.escape_whitespaces = v != 0;
      });
  });
  return m;
}

// The library builds its tries (Darts-clone) from the pieces, and Darts keys end at a NUL byte:
// a piece holding one threw Darts::Details::Exception ("zero-length key") out of the load, or
// would silently become a shorter piece. No real model has one (byte pieces are written "<0x00>"),
// so such a file is refused here, naming the piece.
void check_pieces(std::string_view proto, const std::string& path) {
  int64_t index = 0;
  for_each_field(proto, [&](uint64_t field, uint64_t wire, uint64_t, std::string_view bytes) {
    if (field != 1 || wire != 2) return;  // ModelProto.pieces
    for_each_field(bytes, [&](uint64_t f, uint64_t w, uint64_t, std::string_view piece) {
      if (f != 1 || w != 2) return;  // SentencePiece.piece
      if (const size_t nul = piece.find('\0'); nul != std::string_view::npos)
        fail("tokenizer", "{}: piece {} holds a NUL byte (at byte {} of its {}): not a SentencePiece model", path,
             index, nul, piece.size());
    });
    ++index;
  });
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& dir);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const override;
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t unk_id() const override { return unk_; }
  int32_t pad_id() const override { return pad_; }
  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  bool is_special(int32_t id) const override { return special_ids_.count(id) > 0; }
  TokenizerKind kind() const override { return TokenizerKind::sentencepiece; }

 private:
  void split_and_encode(std::string_view text, std::vector<int32_t>& out) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
  void encode_words(std::string_view text, std::vector<int32_t>& out) const;
  std::string tokens_to_string(std::vector<std::string> tokens) const;
  int32_t resolve_special(const TokenizerConfig::Special& s, const char* fallback, const TokenizerConfig& cfg);

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;   // what HF uses (dummy prefix per the legacy flag)
  sentencepiece::SentencePieceProcessor sp_words_;  // no dummy prefix, for encode_words
  bool word_split_ = false, dummy_prefix_ = true;
  WordCache cache_;
  int32_t sp_size_ = 0;
  bool legacy_ = true, add_bos_ = true, add_eos_ = false, add_prefix_space_ = true;
  int32_t bos_ = -1, eos_ = -1, unk_ = -1, pad_ = -1;
  std::string unk_token_;
  size_t unk_token_length_ = 0;
  int32_t underline_id_ = -1;
  int64_t vocab_size_ = 0;
  std::vector<AddedToken> added_;                   // matcher value = index here
  std::unordered_map<int32_t, size_t> added_by_id_;
  std::unordered_map<std::string, int32_t> added_by_content_;
  TokenMatcher matcher_;
  std::unordered_set<std::string> special_strings_;  // HF all_special_tokens
  std::unordered_set<int32_t> special_ids_;          // HF all_special_ids
  std::unordered_set<std::string> legacy_added_;     // decoded as separate, space-joined pieces
};

std::string lstrip_py(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t k = i;
    if (!utf8::is_py_space(utf8::next(s, k))) break;
    i = k;
  }
  return std::string(s.substr(i));
}

std::string rstrip_py(std::string_view s) {
  while (!s.empty() && utf8::is_py_space(utf8::last(s))) {
    size_t i = s.size() - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    s = s.substr(0, i);
  }
  return std::string(s);
}

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& dir)
    : path_((std::filesystem::path(dir) / "tokenizer.model").string()) {
  TokenizerConfig cfg = read_tokenizer_config(dir);
  legacy_ = cfg.legacy.value_or(true);  // HF: legacy=None means legacy behaviour
  add_bos_ = cfg.add_bos_token.value_or(true);
  add_eos_ = cfg.add_eos_token.value_or(false);
  add_prefix_space_ = cfg.add_prefix_space.value_or(true);

  std::string proto = read_text_file(path_, "tokenizer");
  // Non-legacy HF loads the model with normalizer_spec.add_dummy_prefix = false. Appending a
  // second normalizer_spec (field 3) holding add_dummy_prefix (field 3) = 0 does the same, as
  // protobuf merges repeated occurrences of a message field.
  if (!legacy_) proto += std::string("\x1a\x02\x18\x00", 4);
  check_pieces(proto, path_);
  auto status = sp_.LoadFromSerializedProto(proto);
  if (!status.ok()) fail("tokenizer", "{}: not a SentencePiece model: {}", path_, status.ToString());
  sp_size_ = sp_.GetPieceSize();
  vocab_size_ = sp_size_;
  underline_id_ = sp_.PieceToId(kUnderline);
  if (sp_.IdToPiece(underline_id_) != kUnderline) underline_id_ = -1;

  const SpModelInfo info = read_model_info(proto);
  dummy_prefix_ = info.add_dummy_prefix;
  word_split_ = info.model_type == 2 && !info.treat_whitespace_as_suffix && info.normalizer_name == "identity" &&
                !info.has_charsmap && !info.remove_extra_whitespaces && info.escape_whitespaces && underline_id_ >= 0;
  for (int id = 0; word_split_ && id < sp_size_; ++id) {
    std::string_view piece = sp_.IdToPiece(id);
    while (piece.starts_with(kUnderline)) piece.remove_prefix(kUnderline.size());
    word_split_ = piece.find(kUnderline) == std::string_view::npos;
  }
  if (word_split_) {
    std::string no_dummy = proto + (legacy_ ? std::string("\x1a\x02\x18\x00", 4) : std::string());
    word_split_ = sp_words_.LoadFromSerializedProto(no_dummy).ok();
  }

  // Added tokens as saved (added_tokens_decoder, added_tokens.json), then the special tokens not
  // among them (HF PreTrainedTokenizer.__init__ -> _add_tokens(all_special_tokens_extended)).
  for (const AddedToken& t : cfg.added_tokens) {
    if (t.id < 0) continue;
    if (auto it = added_by_content_.find(t.content); it != added_by_content_.end()) continue;
    added_by_id_[t.id] = added_.size();
    added_by_content_[t.content] = t.id;
    added_.push_back(t);
    vocab_size_ = std::max<int64_t>(vocab_size_, t.id + 1);
  }
  bos_ = resolve_special(cfg.bos_token, "<s>", cfg);
  eos_ = resolve_special(cfg.eos_token, "</s>", cfg);
  unk_ = resolve_special(cfg.unk_token, "<unk>", cfg);
  pad_ = resolve_special(cfg.pad_token, nullptr, cfg);
  for (const std::string& s : cfg.additional_special_tokens) resolve_special({true, s}, nullptr, cfg);
  unk_token_ = unk_ >= 0 ? id_to_token(unk_) : "";
  std::vector<int> unk_ids;
  if (!unk_token_.empty()) sp_.Encode(unk_token_, &unk_ids);
  unk_token_length_ = unk_ids.size();

  for (size_t i = 0; i < added_.size(); ++i) matcher_.add(added_[i].content, static_cast<int32_t>(i));
  for (const AddedToken& t : added_)
    if (!special_strings_.count(t.content)) legacy_added_.insert(t.content);
  for (const std::string& s : cfg.additional_special_tokens)
    if (auto id = token_to_id(s); id && *id >= sp_size_) legacy_added_.insert(s);
}

// The id of a special token, adding it as an added token when new (HF _add_tokens).
int32_t SentencePieceTokenizer::resolve_special(const TokenizerConfig::Special& s, const char* fallback,
                                                const TokenizerConfig& cfg) {
  std::optional<std::string> content = s.given ? s.content : fallback ? std::optional<std::string>(fallback) : std::nullopt;
  if (!content || content->empty()) return -1;
  special_strings_.insert(*content);
  int32_t id;
  if (auto it = added_by_content_.find(*content); it != added_by_content_.end()) {
    id = it->second;
  } else {
    AddedToken t;
    for (const AddedToken& a : cfg.special_token_attrs)
      if (a.content == *content) t = a;
    t.content = *content;
    t.special = true;
    t.normalized = false;
    int piece = sp_.PieceToId(*content);
    t.id = sp_.IdToPiece(piece) == *content ? piece : static_cast<int32_t>(vocab_size_);
    added_by_id_[t.id] = added_.size();
    added_by_content_[t.content] = t.id;
    added_.push_back(t);
    vocab_size_ = std::max<int64_t>(vocab_size_, t.id + 1);
    id = t.id;
  }
  special_ids_.insert(id);
  return id;
}

std::optional<int32_t> SentencePieceTokenizer::token_to_id(std::string_view token) const {
  if (auto it = added_by_content_.find(std::string(token)); it != added_by_content_.end()) return it->second;
  int id = sp_.PieceToId(token);
  if (id >= 0 && sp_.IdToPiece(id) == token) return id;
  return std::nullopt;
}

std::string SentencePieceTokenizer::id_to_token(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return added_[it->second].content;
  if (id < 0 || id >= sp_size_) fail("tokenizer", "{}: id {} is outside the vocabulary [0, {})", path_, id, vocab_size_);
  return sp_.IdToPiece(id);
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (size_t bad = utf8::find_invalid(text); bad != std::string_view::npos)
    fail("tokenizer", "{}: input is not valid UTF-8 (byte {})", path_, bad);
  std::vector<int32_t> ids;
  if (add_special_tokens && add_bos_ && bos_ >= 0) ids.push_back(bos_);
  const size_t first = ids.size();
  if (legacy_ || text.empty()) {
    split_and_encode(text, ids);
  } else {
    // LlamaTokenizer.tokenize (non-legacy): "▁" -> " ", one "▁" in front of the whole text.
    std::string t = add_prefix_space_ ? std::string(kUnderline) : std::string();
    for (size_t i = 0; i < text.size();) {
      if (text.substr(i, 3) == kUnderline) t += ' ', i += 3;
      else t += text[i++];
    }
    split_and_encode(t, ids);
    if (ids.size() > first + 1 && ids[first] == underline_id_ && special_strings_.count(id_to_token(ids[first + 1])))
      ids.erase(ids.begin() + static_cast<ptrdiff_t>(first));
  }
  if (add_special_tokens && add_eos_ && eos_ >= 0) ids.push_back(eos_);
  return ids;
}

// PreTrainedTokenizer.tokenize: split on added tokens, apply their strip/single_word rules to the
// neighbouring text, encode the rest.
void SentencePieceTokenizer::split_and_encode(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<std::string> segs;
  for (size_t pos = 0; pos < text.size();) {
    TokenMatcher::Match m = matcher_.find(text, pos);
    if (m.start > pos) segs.emplace_back(text.substr(pos, m.start - pos));
    if (m.value >= 0) segs.emplace_back(text.substr(m.start, m.end - m.start));
    pos = m.end;
  }
  // As HF, a segment counts as an added token when its text is one (the rules below edit texts).
  const auto added = [&](const std::string& s) -> const AddedToken* {
    auto it = added_by_content_.find(s);
    return it == added_by_content_.end() ? nullptr : &added_[added_by_id_.at(it->second)];
  };
  for (size_t i = 0; i < segs.size(); ++i) {
    const AddedToken* t = added(segs[i]);
    if (!t || (!t->rstrip && !t->lstrip && !t->single_word)) continue;
    // `left`/`right` are the neighbours as they were before this token's rules ran (as HF).
    const std::string left = i > 0 ? segs[i - 1] : "", right = i + 1 < segs.size() ? segs[i + 1] : "";
    if (t->rstrip && !right.empty()) segs[i + 1] = lstrip_py(right);
    if (t->lstrip && !left.empty()) segs[i - 1] = rstrip_py(left);
    if (t->single_word && !left.empty() && left.back() != ' ') {
      segs[i - 1] += segs[i];
      segs[i].clear();
    } else if (t->single_word && !right.empty() && right.front() != ' ') {
      segs[i + 1] = segs[i] + segs[i + 1];
      segs[i].clear();
    }
  }
  for (const std::string& s : segs) {
    if (s.empty()) continue;
    if (const AddedToken* t = added(s)) out.push_back(t->id);
    else encode_plain(s, out);
  }
}

// LlamaTokenizer._tokenize.
void SentencePieceTokenizer::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
  if (word_split_) {
    // Legacy: the model's dummy prefix. Non-legacy: none; the unk trick only keeps a leading space,
    // which a word of its own keeps anyway.
    encode_words(legacy_ && dummy_prefix_ ? std::string(kUnderline) + std::string(text) : text, out);
    return;
  }
  std::vector<int> ids;
  size_t drop = 0;
  if (!legacy_ && (text.starts_with(kUnderline) || text.starts_with(' '))) {
    // Encode "<unk>" + text and drop the unk pieces, so SentencePiece keeps the leading space.
    auto st = sp_.Encode(unk_token_ + std::string(text), &ids);
    if (!st.ok()) fail("tokenizer", "{}: {}", path_, st.ToString());
    drop = ids.size() >= unk_token_length_ ? unk_token_length_ : 0;
  } else if (auto st = sp_.Encode(text, &ids); !st.ok()) {
    fail("tokenizer", "{}: {}", path_, st.ToString());
  }
  out.insert(out.end(), ids.begin() + static_cast<ptrdiff_t>(drop), ids.end());
}

// SentencePiece's identity normalization (" " -> "▁"), then one encode per word, a word being a
// run of "▁" and the characters up to the next such run.
void SentencePieceTokenizer::encode_words(std::string_view text, std::vector<int32_t>& out) const {
  std::string norm;
  norm.reserve(text.size() + text.size() / 4);
  for (char c : text) {
    if (c == ' ') norm += kUnderline;
    else norm += c;
  }
  std::vector<int> ids;
  const auto encode_word = [&](std::string_view w) {
    if (w.empty() || cache_.lookup(w, out)) return;
    ids.clear();
    if (auto st = sp_words_.Encode(w, &ids); !st.ok()) fail("tokenizer", "{}: {}", path_, st.ToString());
    const size_t first = out.size();
    out.insert(out.end(), ids.begin(), ids.end());
    cache_.insert(w, std::span<const int32_t>(out).subspan(first));
  };
  size_t start = 0;
  bool prev_underline = false;
  for (size_t i = 0; i < norm.size();) {
    if (std::string_view(norm).substr(i, kUnderline.size()) == kUnderline) {
      if (!prev_underline && i > start) encode_word(std::string_view(norm).substr(start, i - start)), start = i;
      prev_underline = true;
      i += kUnderline.size();
    } else {
      prev_underline = false;
      ++i;
    }
  }
  encode_word(std::string_view(norm).substr(start));
}

std::string SentencePieceTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  // PreTrainedTokenizer._decode with spaces_between_special_tokens=True.
  std::vector<std::string> sub_texts, current;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_) fail("tokenizer", "{}: id {} is outside the vocabulary [0, {})", path_, id, vocab_size_);
    if (skip_special_tokens && special_ids_.count(id)) continue;
    std::string token = id_to_token(id);
    if (legacy_added_.count(token)) {
      if (!current.empty()) {
        std::string s = tokens_to_string(std::move(current));
        if (!s.empty()) sub_texts.push_back(std::move(s));
        current.clear();
      }
      sub_texts.push_back(std::move(token));
    } else {
      current.push_back(std::move(token));
    }
  }
  if (!current.empty()) sub_texts.push_back(tokens_to_string(std::move(current)));
  std::string text;
  for (size_t i = 0; i < sub_texts.size(); ++i) text += (i ? " " : "") + sub_texts[i];
  return text;
}

// LlamaTokenizer.convert_tokens_to_string.
std::string SentencePieceTokenizer::tokens_to_string(std::vector<std::string> tokens) const {
  const auto sp_decode = [&](const std::vector<std::string>& pieces) {
    std::string s;
    if (!pieces.empty()) sp_.Decode(pieces, &s);
    return s;
  };
  if (add_prefix_space_ && tokens[0].starts_with(kUnderline)) tokens[0].erase(0, kUnderline.size());
  std::string out;
  std::vector<std::string> current;
  bool prev_is_special = false;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (special_strings_.count(tokens[i])) {
      if (!prev_is_special && i != 0 && legacy_) out += ' ';
      out += sp_decode(current) + tokens[i];
      prev_is_special = true;
      current.clear();
    } else {
      if (prev_is_special && i == 1 && add_prefix_space_ && !tokens[i].starts_with(kUnderline)) out += ' ';
      current.push_back(tokens[i]);
      prev_is_special = false;
    }
  }
  return out + sp_decode(current);
}

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& dir) {
  return std::make_unique<SentencePieceTokenizer>(dir);
}

}  // namespace sft
