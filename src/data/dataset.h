// A tokenized chat data file: every valid sample rendered with a template, tokenized with labels
// by construction, truncated to model_max_length; invalid or label-less samples counted with
// their index and reason. Built on all cores (OpenMP) in chunks, so memory is the tokens plus
// one chunk of parsed samples. Reference: FastChat SupervisedDataset / preprocess() (eager).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

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
  bool json_lines = false;       // the file is JSON Lines (else a JSON array)
  double seconds = 0;            // wall time of load_dataset
};

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

 private:
  friend Dataset load_dataset(const std::string&, const Tokenizer&, const DataOptions&);
  std::string path_, template_;
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

// Reads, validates, renders, tokenizes. sft::Error on an unreadable or malformed file, or (strict)
// "[data] file:sample N: reason" for the first bad sample.
Dataset load_dataset(const std::string& path, const Tokenizer& tok, const DataOptions& opt);

// "file:sample N (line L): <kind>: <detail>" for an issue.
std::string describe_issue(const std::string& path, const SampleIssue& issue);

// Logs the counts (kept, invalid by kind, dropped, truncated, leading turns dropped) and the first
// `max_listed` issues: what the trainer prints so that nothing is skipped silently.
void log_data_summary(const Dataset& data, size_t max_listed = 10);

}  // namespace sft
