// tokenizer.json tokenizer, following HF tokenizers 0.19 Tokenizer::encode/decode: added tokens
// are split out of the raw text (normalized=false ones first, then normalized ones from the
// normalized text; lstrip/rstrip/single_word as added_vocabulary.rs), each remaining segment is
// normalized, pre-tokenized and run through BPE, then the post-processor adds BOS/EOS.
// Guard (Meta's llama3 tokenizer.py): a segment with a run of more than 25,000 whitespace or
// non-whitespace characters is cut there before a regex pre-tokenizer sees it; HF does not cut.
// Speed: as in sentencepiece_tokenizer.cpp, when no token has a "▁" after another character and
// ignore_merges is off, no merge crosses the start of a "▁"-run, so SentencePiece-style pre-tokens
// (a whole normalized segment) are cut there into words that BPE handles and caches separately.
#include "tokenizer/bpe_tokenizer.h"

#include <filesystem>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/file_util.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/hf_pipeline.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer_config.h"
#include "tokenizer/utf8.h"

namespace sft {

namespace {

using nlohmann::json;

constexpr size_t kMaxRun = 25000;  // Meta's MAX_NO_WHITESPACES_CHARS

bool is_white_space(char32_t c) { return utf8::is_py_space(c) && !(c >= 0x1C && c <= 0x1F); }

class JsonTokenizer final : public Tokenizer {
 public:
  explicit JsonTokenizer(const std::string& dir);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const override;
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t unk_id() const override { return unk_; }
  int32_t pad_id() const override { return pad_; }
  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  bool is_special(int32_t id) const override {
    auto it = added_by_id_.find(id);
    return it != added_by_id_.end() && added_[it->second].special;
  }
  TokenizerKind kind() const override { return TokenizerKind::json; }

 private:
  struct Split {
    size_t a, b;
    int32_t id;  // -1: text
  };
  void find_added(std::string_view s, const TokenMatcher& matcher, std::vector<Split>& out) const;
  void encode_segment(std::string_view s, bool first, std::vector<int32_t>& out) const;
  void encode_normalized(std::string_view s, bool first, std::vector<int32_t>& out) const;
  void load(const json& j, const TokenizerConfig& cfg);
  void add_token(const AddedToken& t);
  int32_t special_id(const TokenizerConfig::Special& s, const char* llama_default, bool llama);

  std::string path_;
  std::unique_ptr<BpeModel> model_;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  Decoder decoder_;
  PostProcessor post_;
  std::vector<AddedToken> added_;
  std::unordered_map<int32_t, size_t> added_by_id_;
  TokenIdMap added_by_content_;
  TokenMatcher raw_matcher_, normalized_matcher_;  // values: index into added_
  Regex word_char_{R"([\p{L}\p{N}\p{M}\p{Pc}\x{200C}\x{200D}])"};  // Rust regex \w
  int32_t bos_ = -1, eos_ = -1, unk_ = -1, pad_ = -1;
  int64_t vocab_size_ = 0;
  bool split_words_ = false;
};

constexpr std::string_view kUnderline = "\xE2\x96\x81";

// See the file comment: whether pre-tokens may be cut before each "▁"-run.
bool can_split_words(const BpeModel& model) {
  if (model.ignore_merges() || !model.token_to_id(kUnderline)) return false;
  for (const auto& [token, id] : model.vocab()) {
    std::string_view t = token;
    while (t.starts_with(kUnderline)) t.remove_prefix(kUnderline.size());
    if (t.find(kUnderline) != std::string_view::npos) return false;
  }
  return true;
}

JsonTokenizer::JsonTokenizer(const std::string& dir)
    : path_((std::filesystem::path(dir) / "tokenizer.json").string()) {
  json j = read_json_file_lenient(path_, "tokenizer");
  if (!j.is_object() || !j.contains("model")) fail("tokenizer", "{}: not a tokenizer.json (no \"model\")", path_);
  try {
    load(j, read_tokenizer_config(dir));
  } catch (const json::exception& e) {
    fail("tokenizer", "{}: unexpected structure: {}", path_, e.what());
  }
}

void JsonTokenizer::load(const json& j, const TokenizerConfig& cfg) {
  const auto null_or = [&](const char* key) { return j.contains(key) ? j[key] : json(); };
  model_ = std::make_unique<BpeModel>(j["model"], path_);
  normalizer_ = Normalizer(null_or("normalizer"), path_);
  pre_tokenizer_ = PreTokenizer(null_or("pre_tokenizer"), path_);
  decoder_ = Decoder(null_or("decoder"), path_);
  post_ = PostProcessor(null_or("post_processor"), path_);
  vocab_size_ = model_->size();
  split_words_ = can_split_words(*model_);

  const auto flag = [](const json& a, const char* key, bool def) {
    return a.contains(key) && a[key].is_boolean() ? a[key].get<bool>() : def;
  };
  for (const json& a : null_or("added_tokens")) {
    AddedToken t;
    t.id = a.at("id").get<int32_t>();
    t.content = a.at("content").get<std::string>();
    t.single_word = flag(a, "single_word", false);
    t.lstrip = flag(a, "lstrip", false);
    t.rstrip = flag(a, "rstrip", false);
    t.special = flag(a, "special", false);
    t.normalized = flag(a, "normalized", !t.special);
    if (!t.content.empty() && t.id >= 0) add_token(t);
  }

  // Special tokens named by tokenizer_config.json become special added tokens when they are not
  // already (transformers' PreTrainedTokenizerFast does this at load).
  const bool llama = cfg.tokenizer_class == "LlamaTokenizerFast" || cfg.tokenizer_class == "LlamaTokenizer";
  bos_ = special_id(cfg.bos_token, "<s>", llama);
  eos_ = special_id(cfg.eos_token, "</s>", llama);
  unk_ = special_id(cfg.unk_token, "<unk>", llama);
  pad_ = special_id(cfg.pad_token, nullptr, llama);
  for (const std::string& s : cfg.additional_special_tokens) special_id({true, s}, nullptr, llama);
  if (!cfg.unk_token.given && unk_ < 0 && model_->unk_token())
    unk_ = token_to_id(*model_->unk_token()).value_or(-1);
  if (llama) {
    // transformers' LlamaTokenizerFast rebuilds the template from add_bos_token/add_eos_token.
    post_ = PostProcessor();
    if (cfg.add_bos_token.value_or(true) && bos_ >= 0) post_.prefix = {bos_};
    if (cfg.add_eos_token.value_or(false) && eos_ >= 0) post_.suffix = {eos_};
  }

  // Matchers over the raw text (normalized=false) and over normalized text.
  for (size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& t = added_[i];
    if (t.normalized) normalized_matcher_.add(normalizer_.apply(t.content), static_cast<int32_t>(i));
    else raw_matcher_.add(t.content, static_cast<int32_t>(i));
  }
}

void JsonTokenizer::add_token(const AddedToken& t) {
  added_by_id_[t.id] = added_.size();
  added_by_content_[t.content] = t.id;
  added_.push_back(t);
  vocab_size_ = std::max<int64_t>(vocab_size_, t.id + 1);
}

int32_t JsonTokenizer::special_id(const TokenizerConfig::Special& s, const char* llama_default, bool llama) {
  std::optional<std::string> content = s.given ? s.content : (llama && llama_default) ? std::optional<std::string>(llama_default) : std::nullopt;
  if (!content || content->empty()) return -1;
  if (auto it = added_by_content_.find(*content); it != added_by_content_.end()) return it->second;
  AddedToken t;
  t.content = *content;
  t.special = true;
  t.normalized = false;
  t.id = model_->token_to_id(*content).value_or(static_cast<int32_t>(vocab_size_));
  add_token(t);
  return t.id;
}

std::optional<int32_t> JsonTokenizer::token_to_id(std::string_view token) const {
  if (auto it = added_by_content_.find(token); it != added_by_content_.end()) return it->second;
  return model_->token_to_id(token);
}

std::string JsonTokenizer::id_to_token(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return added_[it->second].content;
  if (const std::string* t = model_->id_to_token(id)) return *t;
  fail("tokenizer", "{}: id {} is not in the vocabulary (size {})", path_, id, vocab_size_);
}

// AddedVocabulary::find_matches.
void JsonTokenizer::find_added(std::string_view s, const TokenMatcher& matcher, std::vector<Split>& out) const {
  size_t start_offset = 0;
  for (size_t pos = 0; pos < s.size();) {
    TokenMatcher::Match m = matcher.find(s, pos);
    if (m.value < 0) break;
    pos = m.end;
    const AddedToken& t = added_[m.value];
    size_t start = m.start, stop = m.end;
    if (t.single_word) {
      const auto word_at = [&](size_t i) { return word_char_.matches_at_start(s.substr(i)); };
      size_t prev = start;  // start of the character before the match
      while (prev > 0 && (static_cast<unsigned char>(s[--prev]) & 0xC0) == 0x80) {}
      bool start_space = start == 0 || !word_at(prev);
      bool stop_space = stop == s.size() || !word_at(stop);
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      size_t a = start;
      while (a > 0) {
        size_t k = a - 1;
        while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        size_t tmp = k;
        if (!is_white_space(utf8::next(s, tmp))) break;
        a = k;
      }
      start = std::max(a, start_offset);
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t k = stop;
        if (!is_white_space(utf8::next(s, k))) break;
        stop = k;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, t.id});
    start_offset = stop;
  }
  if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
}

std::vector<int32_t> JsonTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (size_t bad = utf8::find_invalid(text); bad != std::string_view::npos)
    fail("tokenizer", "{}: input is not valid UTF-8 (byte {})", path_, bad);
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = post_.prefix;
  std::vector<Split> splits;
  find_added(text, raw_matcher_, splits);
  for (const Split& sp : splits) {
    if (sp.id >= 0) ids.push_back(sp.id);
    else encode_segment(text.substr(sp.a, sp.b - sp.a), sp.a == 0, ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), post_.suffix.begin(), post_.suffix.end());
  return ids;
}

void JsonTokenizer::encode_segment(std::string_view s, bool first, std::vector<int32_t>& out) const {
  std::string normalized = normalizer_.apply(s);
  if (normalized_matcher_.empty()) {
    encode_normalized(normalized, first, out);
    return;
  }
  std::vector<Split> splits;
  find_added(normalized, normalized_matcher_, splits);
  for (const Split& sp : splits) {
    if (sp.id >= 0) out.push_back(sp.id);
    else encode_normalized(std::string_view(normalized).substr(sp.a, sp.b - sp.a), first && sp.a == 0, out);
  }
}

void JsonTokenizer::encode_normalized(std::string_view s, bool first, std::vector<int32_t>& out) const {
  std::vector<PreToken> pieces;
  if (pre_tokenizer_.has_regex_split() && s.size() > kMaxRun) {
    // Meta's _split_whitespaces_or_nonwhitespaces: cut runs longer than kMaxRun characters.
    size_t slice_start = 0, run = 0;
    bool run_is_space = false;
    for (size_t i = 0; i < s.size();) {
      size_t at = i;
      bool space = utf8::is_py_space(utf8::next(s, i));
      if (at == 0 || space != run_is_space) {
        run_is_space = space, run = 1;
      } else if (++run > kMaxRun) {
        pre_tokenizer_.apply(s.substr(slice_start, at - slice_start), first && slice_start == 0, pieces);
        slice_start = at, run = 1;
      }
    }
    pre_tokenizer_.apply(s.substr(slice_start), first && slice_start == 0, pieces);
  } else {
    pre_tokenizer_.apply(s, first, pieces);
  }
  for (const PreToken& p : pieces) {
    if (!split_words_) {
      model_->tokenize(p.text, out);
      continue;
    }
    const std::string_view t = p.text;
    size_t start = 0;
    bool prev_underline = false;
    for (size_t i = 0; i < t.size();) {
      if (t.substr(i, kUnderline.size()) == kUnderline) {
        if (!prev_underline && i > start) model_->tokenize(t.substr(start, i - start), out), start = i;
        prev_underline = true;
        i += kUnderline.size();
      } else {
        prev_underline = false;
        ++i;
      }
    }
    model_->tokenize(t.substr(start), out);
  }
}

std::string JsonTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_) fail("tokenizer", "{}: id {} is outside the vocabulary [0, {})", path_, id, vocab_size_);
    if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
      if (!(skip_special_tokens && added_[it->second].special)) tokens.push_back(added_[it->second].content);
    } else if (const std::string* t = model_->id_to_token(id)) {
      tokens.push_back(*t);
    }  // an id with no token is dropped, as HF
  }
  return decoder_.apply(std::move(tokens));
}

}  // namespace

std::unique_ptr<Tokenizer> load_json_tokenizer(const std::string& dir) { return std::make_unique<JsonTokenizer>(dir); }

}  // namespace sft
