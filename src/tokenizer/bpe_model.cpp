// BPE model, a transcription of HF tokenizers 0.19 models/bpe/{model,word}.rs: a word starts as
// its characters (unknown ones become <0xXX> byte tokens with byte_fallback, else unk, fused
// when fuse_unk); then the pair with the lowest merge rank (leftmost on ties) is merged until no
// pair is mergeable, using a priority queue over a linked list of symbols: O(n log n) per word.
#include "tokenizer/bpe_model.h"

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "tokenizer/utf8.h"

namespace sft {

using nlohmann::json;

BpeModel::BpeModel(const json& model, const std::string& where) {
  if (!model.is_object() || model.value("type", "BPE") != "BPE")
    fail("tokenizer", "{}: model type '{}' is not supported (BPE only)", where,
         model.is_object() ? model.value("type", "?") : "?");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && !model[key].is_null() && !model[key].get<std::string>().empty())
      fail("tokenizer", "{}: BPE {} is not supported", where, key);
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() > 0)
    fail("tokenizer", "{}: BPE dropout is not supported", where);
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("tokenizer", "{}: model.vocab missing", where);

  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      fail("tokenizer", "{}: vocab id of '{}' is not a valid id", where, token);
    int32_t i = id.get<int32_t>();
    vocab_[token] = i;
    if (static_cast<size_t>(i) >= tokens_.size()) tokens_.resize(i + 1), has_token_.resize(i + 1);
    tokens_[i] = token;
    has_token_[i] = 1;
  }
  char_ids_.assign(0x800, -1);
  for (char32_t c = 0; c < 0x800; ++c) {
    std::string ch;
    utf8::append(ch, c);
    if (auto id = token_to_id(ch)) char_ids_[c] = *id;
  }
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  for (int b = 0; b < 256; ++b)
    if (auto id = token_to_id(fmt::format("<0x{:02X}>", b))) byte_ids_[b] = *id;

  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    unk_token_ = model["unk_token"].get<std::string>();
    if (auto id = token_to_id(*unk_token_)) unk_id_ = *id;
  }
  fuse_unk_ = model.value("fuse_unk", false);
  byte_fallback_ = model.value("byte_fallback", false);
  ignore_merges_ = model.value("ignore_merges", false);

  const json& merges = model.contains("merges") ? model["merges"] : json::array();
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    std::string a, b;
    if (m.is_string()) {  // "a b"
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos) fail("tokenizer", "{}: merge #{} '{}' is not 'a b'", where, rank, s);
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["a", "b"]
      a = m[0].get<std::string>(), b = m[1].get<std::string>();
    } else {
      fail("tokenizer", "{}: merge #{} is neither \"a b\" nor [\"a\", \"b\"]", where, rank);
    }
    auto ia = token_to_id(a), ib = token_to_id(b), inew = token_to_id(a + b);
    if (!ia || !ib || !inew)
      fail("tokenizer", "{}: merge #{} ('{}', '{}'): '{}' is not in the vocabulary", where, rank, a, b,
           !ia ? a : !ib ? b : a + b);
    merges_[(uint64_t(uint32_t(*ia)) << 32) | uint32_t(*ib)] = {static_cast<int32_t>(rank), *inew};
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size() || !has_token_[id]) return nullptr;
  return &tokens_[id];
}

int32_t BpeModel::char_id(std::string_view ch) const {
  if (ch.size() <= 2) {  // one- and two-byte characters: table lookup
    size_t i = 0;
    char32_t c = utf8::next(ch, i);
    if (c < char_ids_.size()) return char_ids_[c];
  }
  auto it = vocab_.find(ch);
  return it == vocab_.end() ? -1 : it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (cache_.lookup(word, out)) return;
  const size_t first = out.size();
  merge_word(word, out);
  cache_.insert(word, std::span<const int32_t>(out).subspan(first));
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id, prev, next;
    bool removed;
  };
  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator<(const Candidate& o) const {  // std heap is a max-heap: invert
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> queue;
  symbols.clear();
  queue.clear();
  const auto add = [&](int32_t id) {
    int32_t n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, false});
  };

  // Characters -> initial symbols (BPE::merge_word).
  int32_t pending_unk = -1;  // an unk waiting to be emitted (fused with following unknowns)
  for (size_t i = 0; i < word.size();) {
    size_t n = std::min<size_t>(utf8::seq_len(static_cast<unsigned char>(word[i])), word.size() - i);
    std::string_view ch = word.substr(i, n);
    i += n;
    int32_t id = char_id(ch);
    if (id >= 0) {
      if (pending_unk >= 0) add(pending_unk), pending_unk = -1;
      add(id);
      continue;
    }
    if (byte_fallback_ && std::all_of(ch.begin(), ch.end(), [&](char c) { return byte_ids_[static_cast<unsigned char>(c)] >= 0; })) {
      for (char c : ch) add(byte_ids_[static_cast<unsigned char>(c)]);  // the pending unk stays pending, as HF
      continue;
    }
    if (unk_token_) {
      if (unk_id_ < 0) fail("tokenizer", "BPE unk_token '{}' is not in the vocabulary", *unk_token_);
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      pending_unk = unk_id_;
    }
  }
  if (pending_unk >= 0) add(pending_unk);

  // Word::merge_all.
  const auto find_merge = [&](int32_t a, int32_t b) -> const Merge* {
    auto it = merges_.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t k = 0; k + 1 < symbols.size(); ++k)
    if (const Merge* m = find_merge(symbols[k].id, symbols[k + 1].id))
      queue.push_back({m->rank, static_cast<int32_t>(k), m->new_id});
  std::make_heap(queue.begin(), queue.end());
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end());
    Candidate top = queue.back();
    queue.pop_back();
    Symbol& cur = symbols[top.pos];
    if (cur.removed || cur.next < 0) continue;
    const int32_t next_pos = cur.next;
    const Symbol right = symbols[next_pos];
    const Merge* m = find_merge(cur.id, right.id);
    if (!m || m->new_id != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    cur.next = right.next;
    symbols[next_pos].removed = true;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0)
      if (const Merge* pm = find_merge(symbols[cur.prev].id, cur.id)) {
        queue.push_back({pm->rank, cur.prev, pm->new_id});
        std::push_heap(queue.begin(), queue.end());
      }
    if (cur.next >= 0)
      if (const Merge* nm = find_merge(cur.id, symbols[cur.next].id)) {
        queue.push_back({nm->rank, top.pos, nm->new_id});
        std::push_heap(queue.begin(), queue.end());
      }
  }
  for (const Symbol& s : symbols)
    if (!s.removed) out.push_back(s.id);
}

}  // namespace sft
