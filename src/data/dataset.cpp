// load_dataset: chunks of samples are parsed, validated, rendered and tokenized in parallel
// (OpenMP, dynamic schedule: conversation lengths vary a lot), then appended in file order, so the
// result and the issue list do not depend on the thread count.
#include "data/dataset.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>

#include "core/check.h"
#include "core/log.h"
#include "data/chat_template.h"
#include "data/jinja_chat.h"
#include "data/sample_encoder.h"

namespace sft {

std::span<const int32_t> Dataset::ids(int64_t i) const {
  return std::span<const int32_t>(tokens_).subspan(offsets_[i], length(i));
}

std::span<const uint8_t> Dataset::train(int64_t i) const {
  return std::span<const uint8_t>(train_).subspan(offsets_[i], length(i));
}

std::vector<int32_t> Dataset::labels(int64_t i) const {
  std::span<const int32_t> ids = this->ids(i);
  std::span<const uint8_t> tr = train(i);
  std::vector<int32_t> out(ids.size());
  for (size_t t = 0; t < ids.size(); ++t) out[t] = tr[t] ? ids[t] : -100;
  return out;
}

uint64_t Dataset::fingerprint() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over 64-bit words
  const auto mix = [&](uint64_t v) {
    for (int b = 0; b < 8; ++b) h = (h ^ ((v >> (8 * b)) & 0xff)) * 1099511628211ull;
  };
  for (int64_t i = 0; i < size(); ++i) mix(static_cast<uint64_t>(source_[i])), mix(static_cast<uint64_t>(length(i)));
  return h;
}

std::string describe_issue(const std::string& path, const SampleIssue& issue) {
  std::string where = fmt::format("{}:sample {}", path, issue.index);
  if (issue.line > 0) where += fmt::format(" (line {})", issue.line);
  return fmt::format("{}: {}: {}", where, issue_kind_name(issue.kind), issue.detail);
}

namespace {

struct Slot {  // one sample's result inside a chunk
  EncodedSample enc;
  std::optional<SampleIssue> issue;
  bool dropped_leading_assistant = false;
  std::string error;  // an unexpected exception (rethrown after the parallel loop)
};

// Trainable tokens that produce a loss: a label at position 0 has no token before it.
int64_t count_targets(std::span<const uint8_t> train) {
  int64_t n = 0;
  for (size_t t = 1; t < train.size(); ++t) n += train[t];
  return n;
}

}  // namespace

Dataset load_dataset(const std::string& path, const Tokenizer& tok, const DataOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  SFT_CHECK(opt.model_max_length >= 2, "data", "model_max_length must be at least 2, got {}", opt.model_max_length);
  const ConversationRenderer renderer(opt.conversation_template, opt.model_dir);
  SampleFile file(path);
  Dataset ds;
  ds.path_ = path;
  ds.template_ = renderer.description();
  ds.max_length_ = opt.model_max_length;
  ds.format_ = opt.format == DataFormat::auto_ ? file.detect_format() : opt.format;
  DataStats& st = ds.stats_;
  st.samples = file.size();
  st.bytes = file.bytes();
  st.json_lines = file.json_lines();
  const SampleEncoder encoder(tok);
  const int64_t max_len = opt.model_max_length;
  const auto add_issue = [&](SampleIssue issue, int64_t index) {
    issue.index = index;
    issue.line = file.line(index);
    if (opt.strict) fail("data", "{} (--strict_data)", describe_issue(path, issue));
    (issue.kind == IssueKind::no_trainable_token ? st.dropped : st.invalid) += 1;
    ds.issues_.push_back(std::move(issue));
  };

  constexpr int64_t kChunk = 4096;
  std::vector<Slot> slots;
  for (int64_t c0 = 0; c0 < file.size(); c0 += kChunk) {
    const int64_t m = std::min(kChunk, file.size() - c0);
    slots.assign(static_cast<size_t>(m), Slot{});
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t k = 0; k < m; ++k) {
      Slot& s = slots[k];
      try {
        Conversation conv;
        ParsedSample p = parse_sample(file.text(c0 + k), ds.format_, conv);
        s.dropped_leading_assistant = p.dropped_leading_assistant;
        if (p.issue) {
          s.issue = std::move(p.issue);
          continue;
        }
        std::string why;
        IssueKind kind = IssueKind::template_split;
        std::optional<std::vector<Segment>> segments;
        try {
          segments = renderer.render_segments(conv, &why, &kind);
        } catch (const Error& e) {  // e.g. the template's raise_exception for a role it does not support
          s.issue = SampleIssue{-1, 0, IssueKind::template_error, e.what()};
          continue;
        }
        if (!segments) {
          s.issue = SampleIssue{-1, 0, kind, why};
          continue;
        }
        encoder.encode(*segments, s.enc);
      } catch (const std::exception& e) {
        s.error = e.what();
      }
    }
    for (int64_t k = 0; k < m; ++k) {
      Slot& s = slots[k];
      const int64_t index = c0 + k;
      if (!s.error.empty()) fail("data", "{}:sample {}: {}", path, index, s.error);
      if (s.issue) {
        add_issue(std::move(*s.issue), index);
        continue;
      }
      const int64_t full = static_cast<int64_t>(s.enc.ids.size());
      const int64_t len = std::min(full, max_len);
      const std::span<const uint8_t> train(s.enc.train.data(), static_cast<size_t>(len));
      const int64_t targets = count_targets(train);
      if (targets == 0) {
        add_issue(SampleIssue{-1, 0, IssueKind::no_trainable_token,
                              full > max_len ? fmt::format("no trainable token left after truncation to {} tokens "
                                                           "(the sample has {})", max_len, full)
                                             : std::string("no trainable token")},
                  index);
        continue;
      }
      st.truncated += full > max_len;
      st.leading_assistant_dropped += s.dropped_leading_assistant;
      st.longest = std::max(st.longest, full);
      st.tokens += len;
      st.trainable_tokens += targets + train[0];
      ds.tokens_.insert(ds.tokens_.end(), s.enc.ids.begin(), s.enc.ids.begin() + len);
      ds.train_.insert(ds.train_.end(), train.begin(), train.end());
      ds.offsets_.push_back(static_cast<int64_t>(ds.tokens_.size()));
      ds.source_.push_back(index);
      ds.full_length_.push_back(full);
    }
    const size_t done = file.end_offset(c0 + m - 1);
    file.release_before(done);
    if (c0 == 0 && c0 + m < file.size() && done > 0) {
      // Reserve for the whole file from the first chunk's tokens per byte, so that growing the
      // token arrays does not briefly need twice their size.
      const double per_byte = static_cast<double>(ds.tokens_.size()) / static_cast<double>(done);
      const auto want = static_cast<size_t>(per_byte * static_cast<double>(file.bytes()) * 1.05);
      ds.tokens_.reserve(want), ds.train_.reserve(want);
      const auto samples = static_cast<size_t>(file.size());
      ds.offsets_.reserve(samples + 1), ds.source_.reserve(samples), ds.full_length_.reserve(samples);
    }
  }
  st.kept = ds.size();
  st.encoder_fallbacks = encoder.fallbacks();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return ds;
}

void log_data_summary(const Dataset& data, size_t max_listed) {
  const DataStats& st = data.stats();
  log_info("[data] {}: {} samples ({}), {} kept, {} invalid, {} dropped (no trainable token), {} truncated to {} "
           "tokens; {} tokens, {} trainable ({:.1f}%); {:.2f} s",
           data.path(), st.samples, data_format_name(data.format()), st.kept, st.invalid, st.dropped, st.truncated,
           data.model_max_length(), st.tokens, st.trainable_tokens,
           st.tokens ? 100.0 * st.trainable_tokens / st.tokens : 0.0, st.seconds);
  if (st.leading_assistant_dropped)
    log_info("[data] {} samples started with an assistant turn; it was dropped (as FastChat)", st.leading_assistant_dropped);
  std::map<IssueKind, int64_t> by_kind;
  for (const SampleIssue& i : data.issues()) ++by_kind[i.kind];
  for (const auto& [kind, n] : by_kind) log_info("[data]   skipped, {}: {}", issue_kind_name(kind), n);
  for (size_t i = 0; i < data.issues().size() && i < max_listed; ++i)
    log_info("[data]   {}", describe_issue(data.path(), data.issues()[i]));
  if (data.issues().size() > max_listed)
    log_info("[data]   ... {} more (sft data validate lists them all)", data.issues().size() - max_listed);
}

}  // namespace sft
