// File and JSON helpers shared by every folder: the whole-file reader, the atomic writer
// (PATH.tmp, fsync, rename, directory fsync) and two JSON readings: strict (a duplicate key is an
// error; HF model files, checkpoints, safetensors headers) and lenient (the last duplicate wins,
// as Python's json does; the tokenizer's files, read as transformers reads them).
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sft {

// Input files nest arrays and objects a few levels deep; nlohmann's copy, dump and comparison
// recurse once per level, so deeper text is refused before it is parsed (as Python's json refuses
// ~1000 levels): parse_json_strict and read_json_file_lenient check it, other parsers of outside
// JSON call json_nesting_depth() first.
constexpr size_t kMaxJsonNesting = 512;
// The deepest nesting of arrays and objects in JSON text (brackets inside strings do not count);
// it stops scanning once the depth passes `stop_above`.
size_t json_nesting_depth(std::string_view text, size_t stop_above = kMaxJsonNesting);

// Parses JSON text like nlohmann::json::parse (trailing whitespace allowed) but treats a
// duplicate object key at any depth as an error. Returns nullopt and sets *error
// ("parse error at line 1, column 9: ...", "duplicate key 'x'") on bad input; never throws.
std::optional<nlohmann::json> parse_json_strict(std::string_view text, std::string* error);

// The whole file as a string; Error "[where] PATH: cannot read: REASON" on failure.
std::string read_text_file(const std::string& path, std::string_view where);

// The file parsed as JSON, duplicate keys allowed (the last wins, as in Python's json). Errors:
// read_text_file's, or "[where] PATH: not valid JSON: REASON".
nlohmann::json read_json_file_lenient(const std::string& path, std::string_view where);

// Writes bytes to path atomically (path + ".tmp", fsync, rename, directory fsync); errors "[io] ...".
void write_file_atomic(const std::string& path, std::string_view bytes);

// A file written to PATH.tmp and renamed over PATH by commit(); the .tmp file is removed if never
// committed. Errors are "[where] PATH.tmp: ..." naming the failed call and errno's text.
class AtomicFile {
 public:
  AtomicFile(std::string path, std::string_view where);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  // fsync, close, rename over PATH, then fsync of the directory (where the filesystem allows it).
  void commit();

 private:
  std::string path_, tmp_, where_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace sft
