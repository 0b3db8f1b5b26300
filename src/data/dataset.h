// A tokenized chat data file: every valid sample rendered with a template, tokenized with labels
// by construction, truncated to model_max_length; invalid or label-less samples counted with
// their index and reason. Built on all cores (OpenMP) in chunks, so memory is the tokens plus
// one chunk of parsed samples; that memory is estimated and checked before the bulk is parsed.
// Its identity (file size and XXH3, template) is what a resume checks. Ranks of a job each build
// one part (DataOptions::part) and join them (data/dataset_parts.h). Reference: FastChat
// SupervisedDataset / preprocess() (eager).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/fingerprint.h"
#include "data/conversation.h"
#include "data/sample_reader.h"
#include "tokenizer/tokenizer.h"

namespace sft {

struct DataOptions {
  // a built-in template's name, or "auto": the chat template of model_dir (data/jinja_chat.h)
  std::string conversation_template = "vicuna_v1.1";
  std::string model_dir = {};  // for "auto"
  int64_t model_max_length = 512;  // longer samples are cut at the right (kept, counted)
  DataFormat format = DataFormat::auto_;
  bool strict = false;  // the first invalid or dropped sample is an sft::Error
  // Bytes the loading may take (-1: not checked), and what they are, for the message (e.g. "free
  // memory less the model's 1.2 GiB"). See DataMemoryEstimate.
  int64_t memory_budget = -1;
  std::string memory_budget_note = "free memory";
  // Encode only part `part` of `parts`: contiguous samples of about 1/parts of the file's JSON
  // bytes (sample_part_range). One rank's share; the parts are joined by join_dataset_parts.
  int part = 0, parts = 1;
};

// The memory of loading a data file, estimated before its samples are parsed and checked against
// DataOptions::memory_budget twice: each of the largest samples (parsed, rendered and tokenized
// whole before truncation, one per thread at once) before anything is parsed; then the whole
// file, from the tokens per byte of its first samples, before the rest is parsed.
struct DataMemoryEstimate {
  int64_t samples = 0;
  int64_t tokens = 0;         // kept tokens, after truncation to model_max_length
  int64_t token_bytes = 0;    // their ids and labels (5 bytes per token)
  int64_t index_bytes = 0;    // per sample: offsets, sources, lengths, the reader's ranges and lines
  int64_t working_bytes = 0;  // the largest samples in flight at once, and one chunk's results
  int64_t total() const { return token_bytes + index_bytes + working_bytes; }
};
// Bytes one thread takes to read, render and tokenize a sample of `json_bytes` bytes whole, with a
// tokenizer of `kind` (measured: docs/reliability.md).
int64_t sample_working_bytes(size_t json_bytes, TokenizerKind kind);
// "1.2 GiB", "640.0 MiB", "12.0 KiB".
std::string human_bytes(int64_t bytes);

// The samples one process encoded, [begin, end) of the file, and its time spent reading the
// file's layout (mapping, splitting into samples, hashing: whole-file on every rank) and
// parsing, rendering and tokenizing its samples.
struct DataPartInfo {
  int64_t begin = 0, end = 0;
  double scan_seconds = 0, encode_seconds = 0;
};

struct DataStats {
  int64_t samples = 0;    // in the file
  int64_t kept = 0;       // usable samples
  int64_t invalid = 0;    // skipped before tokenization (issues other than no_trainable_token)
  int64_t dropped = 0;    // skipped: no trainable token (left after truncation)
  int64_t truncated = 0;  // kept, cut to model_max_length
  int64_t leading_assistant_dropped = 0;  // kept, first (assistant) turn removed as FastChat does
  int64_t tokens = 0;            // kept samples, after truncation
  int64_t trainable_tokens = 0;  // of those, labels != -100
  int64_t longest = 0;           // longest kept sample before truncation, tokens
  int64_t encoder_fallbacks = 0;  // see SampleEncoder::fallbacks()
  size_t bytes = 0;
  uint64_t xxh3 = 0;             // XXH3-64 of the file, computed while reading it
  bool json_lines = false;       // the file is JSON Lines (else a JSON array)
  int64_t estimated_bytes = 0;   // the data's tokens and index, estimated before the bulk was parsed
  int64_t estimated_peak_bytes = 0;  // with the samples in flight: DataMemoryEstimate::total(), checked
  int64_t memory_bytes = 0;      // what the Dataset holds (Dataset::memory_bytes())
  double seconds = 0;            // wall time of load_dataset (and of joining the parts)
  // Who encoded what: one entry (the whole file) for one process, one per part after a join.
  std::vector<DataPartInfo> parts;
  double join_seconds = 0;  // joining the parts (waiting for the slowest part included)
};

class PartExchange;  // data/dataset_parts.h

class Dataset {
 public:
  int64_t size() const { return static_cast<int64_t>(source_.size()); }
  std::span<const int32_t> ids(int64_t i) const;
  std::span<const uint8_t> train(int64_t i) const;  // 1 where the token is a label (unshifted)
  int64_t length(int64_t i) const { return offsets_[i + 1] - offsets_[i]; }
  int64_t source_index(int64_t i) const { return source_[i]; }  // 0-based position in the file
  int64_t full_length(int64_t i) const { return full_length_[i]; }  // before truncation
  std::vector<int32_t> labels(int64_t i) const;                  // id or -100, unshifted

  // Invalid and dropped samples in file order.
  const std::vector<SampleIssue>& issues() const { return issues_; }
  const DataStats& stats() const { return stats_; }
  const std::string& path() const { return path_; }
  DataFormat format() const { return format_; }
  // The template that rendered the samples: "vicuna_v1.1", or "auto (<dir>/tokenizer_config.json)".
  const std::string& template_description() const { return template_; }
  int64_t model_max_length() const { return max_length_; }
  // Hash of (source index, length) of every sample: identifies the data a loader state refers to.
  uint64_t fingerprint() const;
  // What a checkpoint's loader state records of the data: "data file bytes", "data file XXH3"
  // and "template" (a built-in template's name, or the XXH3 of the model's Jinja template text).
  Fingerprint identity() const;
  // Bytes held by the tokens, labels and per-sample arrays.
  int64_t memory_bytes() const;
  // XXH3-64 of everything the samples hold (tokens, labels, lengths, sources, lengths before
  // truncation, issues, counts): equal for equal data, so ranks can check they hold the same.
  uint64_t content_xxh3() const;

 private:
  friend Dataset load_dataset(const std::string&, const Tokenizer&, const DataOptions&);
  friend Dataset join_dataset_parts(Dataset, PartExchange&);
  std::string path_, template_, template_id_;
  DataFormat format_ = DataFormat::auto_;
  int64_t max_length_ = 0;
  std::vector<int32_t> tokens_;        // all samples' ids, concatenated
  std::vector<uint8_t> train_;         // (tokens_.size())
  std::vector<int64_t> offsets_{0};    // (size() + 1)
  std::vector<int64_t> source_;        // (size())
  std::vector<int64_t> full_length_;   // (size())
  std::vector<SampleIssue> issues_;
  DataStats stats_;
};

// Reads, validates, renders, tokenizes (the samples of opt.part only, when opt.parts > 1; the
// counts then are that part's, except `samples`, `bytes`, `xxh3`). sft::Error on an unreadable or
// malformed file, or (strict) "[data] file:sample N: reason" for the first bad sample.
Dataset load_dataset(const std::string& path, const Tokenizer& tok, const DataOptions& opt);

// "file:sample N (line L): <kind>: <detail>" for an issue.
std::string describe_issue(const std::string& path, const SampleIssue& issue);

// Logs the counts (kept, invalid by kind, dropped, truncated, leading turns dropped) and the first
// `max_listed` issues: what the trainer prints so that nothing is skipped silently.
void log_data_summary(const Dataset& data, size_t max_listed = 10);

}  // namespace sft
