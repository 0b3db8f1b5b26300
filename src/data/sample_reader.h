// Reading chat data files without loading them whole into JSON objects: the file is mapped and
// split into the byte ranges of its samples (top-level elements of a JSON array, or lines of
// JSON Lines) by a small scanner that also hashes it (XXH3-64, the file's identity in a resume);
// each sample is parsed on its own (in parallel by the caller).
// Formats: ShareGPT {"conversations": [{"from", "value"}], "system"?, "tools"?}, OpenAI/HF
// {"messages": [{"role", "content", "tool_calls"?, "name"?, "tool_call_id"?}], "tools"?}, Alpaca
// {"instruction", "input"?, "output", "system"?, "history"?}. Tool calls (docs/chat-templates.md):
// a ShareGPT function_call|tool_call value is JSON text of {"name", "arguments"} (or a list of
// them), observation|tool is the result; a sample's tools is a list or JSON text of one.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/conversation.h"

namespace sft {

class Xxh3Stream;

enum class DataFormat { auto_, sharegpt, messages, alpaca };

// "auto" | "sharegpt" | "messages" | "alpaca" (sft::Error otherwise), and back.
DataFormat parse_data_format(std::string_view name);
std::string_view data_format_name(DataFormat f);

class SampleFile {
 public:
  // Maps and splits `path`. sft::Error "[data] path: ..." when the file cannot be read, is empty,
  // is not JSON (neither an array nor JSON Lines), or is JSON but not a list of samples.
  explicit SampleFile(const std::string& path);
  ~SampleFile();
  SampleFile(const SampleFile&) = delete;
  SampleFile& operator=(const SampleFile&) = delete;

  const std::string& path() const { return path_; }
  bool json_lines() const { return json_lines_; }
  size_t bytes() const { return size_; }
  // XXH3-64 of the file's bytes (digest_file's value), computed while the file is split.
  uint64_t xxh3() const { return xxh3_; }
  int64_t size() const { return static_cast<int64_t>(ranges_.size()); }
  size_t sample_bytes(int64_t i) const { return end_offset(i) - ranges_.at(static_cast<size_t>(i)).first; }
  std::string_view text(int64_t i) const;  // the raw JSON of sample i
  int64_t line(int64_t i) const;           // 1-based line where sample i starts

  // Byte offset just past sample i.
  size_t end_offset(int64_t i) const { return ranges_.at(static_cast<size_t>(i)).second; }
  // Drops the mapped pages before byte `offset` from memory (they are read again if used).
  void release_before(size_t offset) const;

  // The format of the file: from the keys of its first sample that is a JSON object
  // (conversations -> sharegpt, messages -> messages, instruction -> alpaca); sharegpt if none.
  DataFormat detect_format() const;

 private:
  void split_array(size_t start, Xxh3Stream& hash);
  void split_lines(Xxh3Stream& hash);
  // Hashes the bytes up to `offset` (when at least a block is pending, or `last`) and drops their
  // pages, so that splitting a file of many GB holds at most a block of it in memory.
  void hash_upto(Xxh3Stream& hash, size_t offset, bool last = false);

  std::string path_;
  const char* data_ = nullptr;
  size_t size_ = 0;
  bool json_lines_ = false;
  uint64_t xxh3_ = 0;
  size_t hashed_ = 0;  // bytes hashed so far (while splitting)
  std::vector<std::pair<size_t, size_t>> ranges_;  // [begin, end) byte offsets of each sample
  std::vector<int64_t> lines_;                      // 1-based line of each sample's first byte
};

// Parses one sample's JSON in format `fmt` (not auto_) into a validated conversation. On failure
// returns the issue (its index left to the caller). dropped_leading_assistant as in
// normalize_messages().
struct ParsedSample {
  std::optional<SampleIssue> issue;
  bool dropped_leading_assistant = false;
};
ParsedSample parse_sample(std::string_view json, DataFormat fmt, Conversation& out);

}  // namespace sft
