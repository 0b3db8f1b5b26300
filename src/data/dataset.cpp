// load_dataset: chunks of samples are parsed, validated, rendered and tokenized in parallel
// (OpenMP, dynamic schedule: conversation lengths vary a lot), then appended in file order, so the
// result and the issue list do not depend on the thread count. Memory is estimated and checked
// before the largest samples and before the bulk of the file are parsed (DataMemoryEstimate).
// With DataOptions::parts > 1 only one part's samples are encoded (data/dataset_parts.h).
#include "data/dataset.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <functional>
#include <map>
#include <queue>

#include "core/check.h"
#include "core/log.h"
#include "core/file_hash.h"
#include "data/chat_template.h"
#include "data/dataset_parts.h"
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

Fingerprint Dataset::identity() const {
  Fingerprint f;
  f.add("data file size", byte_count(stats_.bytes));
  f.add("data file XXH3", xxh3_hex(stats_.xxh3));
  f.add("template", template_id_);
  return f;
}

uint64_t Dataset::content_xxh3() const {
  const auto h = [](const auto& v) { return xxh3_of(v.data(), v.size() * sizeof(v[0])); };
  std::vector<uint64_t> parts{h(tokens_), h(train_), h(offsets_), h(source_), h(full_length_)};
  for (const SampleIssue& i : issues_) {
    const std::vector<int64_t> head{i.index, i.line, static_cast<int64_t>(i.kind)};
    parts.push_back(h(head));
    parts.push_back(h(i.detail));
  }
  const DataStats& st = stats_;
  const std::vector<int64_t> counts{st.samples, st.kept, st.invalid, st.dropped, st.truncated,
                                    st.leading_assistant_dropped, st.tokens, st.trainable_tokens, st.longest,
                                    st.encoder_fallbacks};
  parts.push_back(h(counts));
  return h(parts);
}

int64_t Dataset::memory_bytes() const {
  size_t n = tokens_.capacity() * sizeof(int32_t) + train_.capacity();
  n += (offsets_.capacity() + source_.capacity() + full_length_.capacity()) * sizeof(int64_t);
  n += issues_.capacity() * sizeof(SampleIssue);
  for (const SampleIssue& i : issues_) n += i.detail.capacity();
  return static_cast<int64_t>(n);
}

// The JSON document, the conversation, the rendered text and the tokenizer's work, per byte of the
// sample's JSON: peak RSS of `sft data stats --threads 1` on one sample of 20 and 100 MB of
// English words grew by 8.3 bytes per byte with the LLaMA-2 SentencePiece model and by 26 with
// the LLaMA-3 tokenizer.json (BPE with its pre-tokenizer regex); with a margin.
int64_t sample_working_bytes(size_t json_bytes, TokenizerKind kind) {
  const int64_t per_byte = kind == TokenizerKind::sentencepiece ? 12 : 32;
  return per_byte * static_cast<int64_t>(json_bytes) + (int64_t(1) << 20);
}

std::string human_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.1f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  return fmt::format("{:.1f} KiB", b / 1024.0);
}

std::string describe_issue(const std::string& path, const SampleIssue& issue) {
  std::string where = fmt::format("{}:sample {}", path, issue.index);
  if (issue.line > 0) where += fmt::format(" (line {})", issue.line);
  return fmt::format("{}: {}: {}", where, issue_kind_name(issue.kind), issue.detail);
}

namespace {

struct Slot {  // one sample's result inside a chunk, already truncated to model_max_length
  EncodedSample enc;
  int64_t full = 0;  // tokens before truncation
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

constexpr int64_t kIndexBytesPerSample = 3 * 8 + 16 + 8;  // offsets, sources, lengths; the reader's ranges, lines

// The template's identity for a resume: a built-in template's name, or the XXH3 of the model's
// Jinja template text (and of its tool_use template when it has one).
std::string template_identity(const ConversationRenderer& renderer, const DataOptions& opt) {
  if (!renderer.is_model_template()) return opt.conversation_template;
  const std::optional<ChatTemplateSource> t = find_chat_template(opt.model_dir);
  std::string id = fmt::format("the model's Jinja template, XXH3 {}", t ? xxh3_hex(xxh3_of(t->text.data(), t->text.size())) : "?");
  if (const std::optional<ChatTemplateSource> tools = find_chat_template(opt.model_dir, "", true);
      tools && t && tools->origin != t->origin)
    id += fmt::format(" (tool_use template XXH3 {})", xxh3_hex(xxh3_of(tools->text.data(), tools->text.size())));
  return id;
}

// Before anything is parsed: no sample of 2 GiB or more in the file (the tokenizers index a
// sample's symbols with 32-bit positions), and the `threads` largest samples of [begin, end) in
// flight at once must fit.
void check_largest_samples(const SampleFile& file, int64_t begin, int64_t end, const DataOptions& opt, int threads,
                           TokenizerKind kind) {
  constexpr size_t kMaxSample = (size_t(1) << 31) - 1;
  for (int64_t i = 0; i < file.size(); ++i)
    if (file.sample_bytes(i) > kMaxSample)
      fail("data", "{}:sample {} (line {}) is {} of JSON: samples of 2 GiB or more cannot be tokenized (positions "
                   "inside a sample are 32-bit; sft keeps only its first {} tokens anyway). Shorten, split or remove "
                   "that sample",
           file.path(), i, file.line(i), human_bytes(static_cast<int64_t>(file.sample_bytes(i))), opt.model_max_length);
  if (opt.memory_budget < 0 || begin == end) return;
  std::priority_queue<std::pair<size_t, int64_t>, std::vector<std::pair<size_t, int64_t>>, std::greater<>> top;
  for (int64_t i = begin; i < end; ++i) {
    top.emplace(file.sample_bytes(i), i);
    if (static_cast<int>(top.size()) > threads) top.pop();
  }
  int64_t in_flight = 0;
  std::pair<size_t, int64_t> largest{0, 0};
  for (; !top.empty(); top.pop()) {
    in_flight += sample_working_bytes(top.top().first, kind);
    largest = std::max(largest, top.top());
  }
  const int64_t one = sample_working_bytes(largest.first, kind);
  if (in_flight <= opt.memory_budget) return;
  const std::string where = fmt::format("{}:sample {} (line {})", file.path(), largest.second, file.line(largest.second));
  if (one > opt.memory_budget)
    fail("data", "{} is {} of JSON: reading, rendering and tokenizing it whole (sft keeps only its first {} tokens, "
                 "but tokenizes all of it as FastChat does) takes about {}, and only {} is available ({}). Shorten, "
                 "split or remove that sample before training",
         where, human_bytes(static_cast<int64_t>(largest.first)), opt.model_max_length, human_bytes(one),
         human_bytes(opt.memory_budget), opt.memory_budget_note);
  fail("data", "{}: its {} largest samples (the largest: {}, {} of JSON) would be parsed and tokenized at once by {} "
               "threads, taking about {}, and only {} is available ({}). Use fewer threads (--threads), or shorten "
               "or split the largest samples",
       file.path(), threads, where, human_bytes(static_cast<int64_t>(largest.first)), threads, human_bytes(in_flight),
       human_bytes(opt.memory_budget), opt.memory_budget_note);
}

// After the first chunk (samples [begin, done) of the part [begin, end)): the whole file's memory
// from its tokens per byte so far. A part's process ends up holding the whole file's tokens too
// (joined from every part), and its own part's beside them while they are joined.
DataMemoryEstimate estimate_rest(const SampleFile& file, int64_t begin, int64_t done, int64_t end, size_t done_bytes,
                                 int64_t full_tokens, int64_t kept_tokens, const DataOptions& opt, int threads,
                                 int64_t chunk_bytes, TokenizerKind kind) {
  DataMemoryEstimate e;
  e.samples = file.size();
  // Tokens per JSON byte of the samples read so far (all of them: invalid ones give none); a
  // quarter when none were read. 10% margin.
  const double per_byte = 1.1 * (done_bytes > 0 ? static_cast<double>(full_tokens) / static_cast<double>(done_bytes) : 0.25);
  const auto tokens_of = [&](int64_t i) {
    return std::min<int64_t>(opt.model_max_length,
                             static_cast<int64_t>(std::ceil(per_byte * static_cast<double>(file.sample_bytes(i)))));
  };
  e.tokens = kept_tokens;
  int64_t part_tokens = kept_tokens;
  std::priority_queue<size_t, std::vector<size_t>, std::greater<>> top;
  for (int64_t i = 0; i < file.size(); ++i) {
    if (i >= begin && i < done) continue;
    e.tokens += tokens_of(i);
    if (i < done || i >= end) continue;
    part_tokens += tokens_of(i);
    top.push(file.sample_bytes(i));
    if (static_cast<int>(top.size()) > threads) top.pop();
  }
  e.token_bytes = 5 * e.tokens;
  e.index_bytes = kIndexBytesPerSample * e.samples;
  for (; !top.empty(); top.pop()) e.working_bytes += sample_working_bytes(top.top(), kind);
  if (opt.parts > 1) e.working_bytes += 5 * part_tokens + kIndexBytesPerSample * (end - begin);  // the part, joining
  e.working_bytes += 5 * static_cast<int64_t>(std::ceil(per_byte * static_cast<double>(chunk_bytes)));  // a chunk's results
  return e;
}

void check_data_memory(const SampleFile& file, const DataMemoryEstimate& e, const DataOptions& opt) {
  if (opt.memory_budget < 0 || e.total() <= opt.memory_budget) return;
  fail("data", "{}: loading it needs about {}, and only {} is available ({}): {} samples of {} of JSON make about "
               "{} tokens after truncation to {} (token ids and labels {}, per-sample index {}, samples being parsed "
               "{}). Train on a part of the file (split it), lower --model_max_length, or use a machine with more "
               "memory",
       file.path(), human_bytes(e.total()), human_bytes(opt.memory_budget), opt.memory_budget_note, e.samples,
       human_bytes(static_cast<int64_t>(file.bytes())), e.tokens, opt.model_max_length, human_bytes(e.token_bytes),
       human_bytes(e.index_bytes), human_bytes(e.working_bytes));
}

}  // namespace

Dataset load_dataset(const std::string& path, const Tokenizer& tok, const DataOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  SFT_CHECK(opt.model_max_length >= 2, "data", "model_max_length must be at least 2, got {}", opt.model_max_length);
  const ConversationRenderer renderer(opt.conversation_template, opt.model_dir);
  SampleFile file(path);
  const auto t_scanned = std::chrono::steady_clock::now();
  const auto [begin, end] = sample_part_range(file, opt.part, opt.parts);
  const int threads = std::max(1, omp_get_max_threads());
  check_largest_samples(file, begin, end, opt, threads, tok.kind());  // before the first sample is parsed (detect_format too)
  Dataset ds;
  ds.path_ = path;
  ds.template_ = renderer.description();
  ds.template_id_ = template_identity(renderer, opt);
  ds.max_length_ = opt.model_max_length;
  ds.format_ = opt.format == DataFormat::auto_ ? file.detect_format() : opt.format;
  DataStats& st = ds.stats_;
  st.samples = file.size();
  st.bytes = file.bytes();
  st.xxh3 = file.xxh3();
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

  // Chunks of at most kChunk samples and kChunkBytes of JSON; the first one small, to measure the
  // tokens per byte that the memory estimate of the rest uses.
  constexpr int64_t kChunk = 4096, kFirstChunk = 256;
  constexpr size_t kChunkBytes = size_t(64) << 20, kFirstChunkBytes = size_t(4) << 20;
  int64_t full_tokens = 0;  // before truncation, of the samples read so far
  std::vector<Slot> slots;
  for (int64_t c0 = begin, m = 0; c0 < end; c0 += m) {
    const int64_t max_samples = c0 == begin ? kFirstChunk : kChunk;
    const size_t max_bytes = c0 == begin ? kFirstChunkBytes : kChunkBytes;
    size_t chunk_bytes = file.sample_bytes(c0);
    for (m = 1; c0 + m < end && m < max_samples && chunk_bytes + file.sample_bytes(c0 + m) <= max_bytes; ++m)
      chunk_bytes += file.sample_bytes(c0 + m);
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
        s.full = static_cast<int64_t>(s.enc.ids.size());
        if (s.full > max_len) {  // the chunk keeps only what the dataset will
          s.enc.ids.resize(static_cast<size_t>(max_len)), s.enc.ids.shrink_to_fit();
          s.enc.train.resize(static_cast<size_t>(max_len)), s.enc.train.shrink_to_fit();
        }
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
      const int64_t full = s.full;
      full_tokens += full;
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
    if (c0 == begin) {
      // The whole file's memory from the first chunk's tokens per byte, checked before the rest is
      // parsed; the token arrays are reserved for it (one process), so that growing them does not
      // briefly need twice their size.
      size_t read = 0;
      for (int64_t i = begin; i < begin + m; ++i) read += file.sample_bytes(i);
      const DataMemoryEstimate e = estimate_rest(file, begin, begin + m, end, read, full_tokens,
                                                 static_cast<int64_t>(ds.tokens_.size()), opt, threads,
                                                 static_cast<int64_t>(std::min(kChunkBytes, file.bytes())), tok.kind());
      st.estimated_bytes = e.token_bytes + e.index_bytes;
      st.estimated_peak_bytes = e.total();
      check_data_memory(file, e, opt);
      if (opt.parts == 1 && m < file.size()) {
        ds.tokens_.reserve(static_cast<size_t>(e.tokens)), ds.train_.reserve(static_cast<size_t>(e.tokens));
        const auto samples = static_cast<size_t>(file.size());
        ds.offsets_.reserve(samples + 1), ds.source_.reserve(samples), ds.full_length_.reserve(samples);
      }
    }
  }
  st.kept = ds.size();
  st.memory_bytes = ds.memory_bytes();
  st.encoder_fallbacks = encoder.fallbacks();
  const auto t1 = std::chrono::steady_clock::now();
  st.seconds = std::chrono::duration<double>(t1 - t0).count();
  st.parts = {DataPartInfo{begin, end, std::chrono::duration<double>(t_scanned - t0).count(),
                           std::chrono::duration<double>(t1 - t_scanned).count()}};
  return ds;
}

void log_data_summary(const Dataset& data, size_t max_listed) {
  const DataStats& st = data.stats();
  log_info("[data] {}: {} samples ({}), {} kept, {} invalid, {} dropped (no trainable token), {} truncated to {} "
           "tokens; {} tokens, {} trainable ({:.1f}%); {:.2f} s",
           data.path(), st.samples, data_format_name(data.format()), st.kept, st.invalid, st.dropped, st.truncated,
           data.model_max_length(), st.tokens, st.trainable_tokens,
           st.tokens ? 100.0 * st.trainable_tokens / st.tokens : 0.0, st.seconds);
  log_info("[data] {}: {}, XXH3 {}; the tokenized data holds {} (estimated before loading: {}, and {} while "
           "loading), content XXH3 {}", data.path(), byte_count(st.bytes), xxh3_hex(st.xxh3),
           human_bytes(st.memory_bytes), human_bytes(st.estimated_bytes), human_bytes(st.estimated_peak_bytes),
           xxh3_hex(data.content_xxh3()));
  if (st.parts.size() > 1) {
    log_info("[data] tokenized in {} parts, one per rank, then exchanged ({:.2f} s on this rank, waiting for the "
             "slowest part included):", st.parts.size(), st.join_seconds);
    for (size_t q = 0; q < st.parts.size(); ++q) {
      const DataPartInfo& p = st.parts[q];
      log_info("[data]   rank {} encoded samples {} of {} ({} samples; reading the file's layout {:.2f} s, encoding "
               "{:.2f} s)", q, p.begin < p.end ? fmt::format("{}..{}", p.begin, p.end - 1) : std::string("none"),
               st.samples, p.end - p.begin, p.scan_seconds, p.encode_seconds);
    }
  }
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
