// SampleEncoder (see sample_encoder.h). Three kinds of segment start: the start of the text
// (plain encode), after a special token (the token's text is put back in front so the
// tokenizer applies its own `legacy` rule for text after special tokens, then dropped), and
// after plain text (the anchor rule).
#include "data/sample_encoder.h"

#include <algorithm>

#include "core/check.h"

namespace sft {

namespace {

bool starts_with(std::span<const int32_t> ids, std::span<const int32_t> prefix) {
  return ids.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), ids.begin());
}

}  // namespace

SampleEncoder::SampleEncoder(const Tokenizer& tok) : tok_(tok) {
  // What encode(..., add_special_tokens=true) adds around a text: find the plain ids inside.
  const std::vector<int32_t> with = tok_.encode("a", true), without = tok_.encode("a", false);
  auto it = std::search(with.begin(), with.end(), without.begin(), without.end());
  if (it != with.end()) {
    prefix_.assign(with.begin(), it);
    suffix_.assign(it + static_cast<ptrdiff_t>(without.size()), with.end());
  }
  if (tok_.bos_id() >= 0) bos_text_ = tok_.id_to_token(tok_.bos_id());
  newline_ = Anchor{"\n", tok_.encode("\n", false)};
  letter_ = Anchor{"a", tok_.encode("a", false)};
}

std::vector<int32_t> SampleEncoder::encode_after_special(int32_t special, std::string_view text) const {
  const std::string token = tok_.id_to_token(special);
  std::vector<int32_t> ids = tok_.encode(token + std::string(text), false);
  if (!ids.empty() && ids.front() == special) {
    ids.erase(ids.begin());
    return ids;
  }
  return encode_after_text(text);
}

std::vector<int32_t> SampleEncoder::encode_after_text(std::string_view text) const {
  // A segment that is exactly one special token needs no context.
  if (auto id = tok_.token_to_id(text); id && tok_.is_special(*id)) return {*id};
  const Anchor& first = !text.empty() && (text[0] == '\n' || text[0] == '\r') ? letter_ : newline_;
  const Anchor& second = &first == &newline_ ? letter_ : newline_;
  for (const Anchor* a : {&first, &second}) {
    std::vector<int32_t> ids = tok_.encode(a->text + std::string(text), false);
    if (starts_with(ids, a->ids) && ids.size() > a->ids.size()) {
      ids.erase(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(a->ids.size()));
      return ids;
    }
  }
  fallbacks_.fetch_add(1, std::memory_order_relaxed);
  return tok_.encode(text, false);
}

void SampleEncoder::encode(std::span<const Segment> segs, EncodedSample& out) const {
  out.ids.clear();
  out.train.clear();
  const bool text_has_bos = !bos_text_.empty() && !segs.empty() && segs[0].text.starts_with(bos_text_) &&
                            prefix_.size() == 1 && prefix_[0] == tok_.bos_id();
  if (!text_has_bos) out.ids.insert(out.ids.end(), prefix_.begin(), prefix_.end());
  out.train.assign(out.ids.size(), 0);
  bool at_start = true;
  for (const Segment& seg : segs) {
    if (seg.text.empty()) continue;
    std::vector<int32_t> ids;
    if (at_start) ids = tok_.encode(seg.text, false);
    else if (!out.ids.empty() && tok_.is_special(out.ids.back())) ids = encode_after_special(out.ids.back(), seg.text);
    else ids = encode_after_text(seg.text);
    at_start = false;
    out.ids.insert(out.ids.end(), ids.begin(), ids.end());
    out.train.resize(out.ids.size(), seg.train ? 1 : 0);
  }
  out.ids.insert(out.ids.end(), suffix_.begin(), suffix_.end());
  out.train.resize(out.ids.size(), 0);
}

std::vector<int32_t> labels_of(const EncodedSample& s) {
  std::vector<int32_t> labels(s.ids.size());
  for (size_t t = 0; t < s.ids.size(); ++t) labels[t] = s.train[t] ? s.ids[t] : -100;
  return labels;
}

}  // namespace sft
