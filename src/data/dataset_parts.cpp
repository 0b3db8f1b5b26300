// sample_part_range and join_dataset_parts: a data file split into byte-balanced contiguous parts,
// and the parts joined back into the one-process Dataset. Each array goes through the exchange
// once (concatenated in part order, which is file order); the per-sample offsets travel as lengths
// and are rebuilt; issues travel as fixed-size heads and their detail texts.
#include "data/dataset_parts.h"

#include <algorithm>
#include <chrono>

#include "core/check.h"

namespace sft {

std::pair<int64_t, int64_t> sample_part_range(const SampleFile& file, int part, int parts) {
  SFT_CHECK(parts >= 1 && part >= 0 && part < parts, "data", "part {} of {}: expected 0 <= part < parts", part, parts);
  if (parts == 1) return {0, file.size()};
  double total = 0;
  for (int64_t i = 0; i < file.size(); ++i) total += static_cast<double>(file.sample_bytes(i));
  // Part p starts at the first sample whose preceding bytes reach p/parts of the total.
  const auto start = [&](int p) {
    if (p == 0) return int64_t(0);
    if (p == parts) return file.size();
    const double target = total * p / parts;
    double before = 0;
    int64_t i = 0;
    for (; i < file.size() && before < target; ++i) before += static_cast<double>(file.sample_bytes(i));
    return i;
  };
  return {start(part), start(part + 1)};
}

namespace {

template <class T>
void free_vector(std::vector<T>& v) {
  std::vector<T>().swap(v);
}

// One part's counts and times, sent whole (the exchange carries bytes exactly).
struct PartCounts {
  int64_t invalid, dropped, truncated, leading_assistant_dropped, tokens, trainable_tokens, longest, encoder_fallbacks;
  DataPartInfo info;
};

// An issue's fixed-size head; its detail text travels separately.
struct IssueHead {
  int64_t index, line, kind, detail_bytes;
};

}  // namespace

Dataset join_dataset_parts(Dataset part, PartExchange& ex) {
  const auto t0 = std::chrono::steady_clock::now();
  Dataset ds;
  ds.path_ = part.path_;
  ds.template_ = part.template_;
  ds.template_id_ = part.template_id_;
  ds.format_ = part.format_;
  ds.max_length_ = part.max_length_;

  ds.tokens_ = ex.concat(std::span<const int32_t>(part.tokens_), "data tokens");
  free_vector(part.tokens_);
  ds.train_ = ex.concat(std::span<const uint8_t>(part.train_), "data labels");
  free_vector(part.train_);
  std::vector<int64_t> lengths(static_cast<size_t>(part.size()));
  for (int64_t i = 0; i < part.size(); ++i) lengths[static_cast<size_t>(i)] = part.length(i);
  free_vector(part.offsets_);
  lengths = ex.concat(std::span<const int64_t>(lengths), "data lengths");
  ds.offsets_.resize(lengths.size() + 1);
  for (size_t i = 0; i < lengths.size(); ++i) ds.offsets_[i + 1] = ds.offsets_[i] + lengths[i];
  SFT_CHECK(ds.offsets_.back() == static_cast<int64_t>(ds.tokens_.size()), "data",
            "joining the parts of {}: the samples' lengths add up to {} tokens, the parts sent {}", ds.path_,
            ds.offsets_.back(), ds.tokens_.size());
  free_vector(lengths);
  ds.source_ = ex.concat(std::span<const int64_t>(part.source_), "data sources");
  ds.full_length_ = ex.concat(std::span<const int64_t>(part.full_length_), "data full lengths");

  std::vector<IssueHead> heads;
  std::string details;
  for (const SampleIssue& i : part.issues_) {
    heads.push_back({i.index, i.line, static_cast<int64_t>(i.kind), static_cast<int64_t>(i.detail.size())});
    details += i.detail;
  }
  heads = ex.concat(std::span<const IssueHead>(heads), "data issues");
  details = [&] {
    const std::vector<char> all = ex.concat(std::span<const char>(details.data(), details.size()), "data issue texts");
    return std::string(all.begin(), all.end());
  }();
  size_t at = 0;
  for (const IssueHead& h : heads) {
    ds.issues_.push_back(SampleIssue{h.index, h.line, static_cast<IssueKind>(h.kind),
                                     details.substr(at, static_cast<size_t>(h.detail_bytes))});
    at += static_cast<size_t>(h.detail_bytes);
  }

  const DataStats& ps = part.stats_;
  const PartCounts mine{ps.invalid, ps.dropped, ps.truncated, ps.leading_assistant_dropped, ps.tokens,
                        ps.trainable_tokens, ps.longest, ps.encoder_fallbacks,
                        ps.parts.empty() ? DataPartInfo{} : ps.parts.front()};
  const std::vector<PartCounts> counts = ex.concat(std::span<const PartCounts>(&mine, 1), "data counts");
  DataStats& st = ds.stats_;
  st = ps;  // the file's size, hash and format, this process's estimates
  st.invalid = st.dropped = st.truncated = st.leading_assistant_dropped = st.tokens = st.trainable_tokens = 0;
  st.longest = st.encoder_fallbacks = 0;
  st.parts.clear();
  for (const PartCounts& c : counts) {
    st.invalid += c.invalid, st.dropped += c.dropped, st.truncated += c.truncated;
    st.leading_assistant_dropped += c.leading_assistant_dropped;
    st.tokens += c.tokens, st.trainable_tokens += c.trainable_tokens, st.encoder_fallbacks += c.encoder_fallbacks;
    st.longest = std::max(st.longest, c.longest);
    st.parts.push_back(c.info);
  }
  st.kept = ds.size();
  st.memory_bytes = ds.memory_bytes();
  st.join_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.seconds = ps.seconds + st.join_seconds;
  return ds;
}

}  // namespace sft
