// File and JSON helpers (see file_util.h): the strict JSON parser is nlohmann's SAX DOM builder
// with a duplicate-key check; the atomic writer makes the data and the rename durable.
#include "core/file_util.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <unistd.h>
#include <utility>
#include <vector>

#include "core/check.h"

namespace sft {

namespace {

// Builds the DOM like nlohmann's own SAX DOM parser, but rejects duplicate object keys.
class StrictSax {
 public:
  using json = nlohmann::json;
  explicit StrictSax(json& root) : root_(root) {}
  bool null() { return put(nullptr); }
  bool boolean(bool v) { return put(v); }
  bool number_integer(json::number_integer_t v) { return put(v); }
  bool number_unsigned(json::number_unsigned_t v) { return put(v); }
  bool number_float(json::number_float_t v, const json::string_t&) { return put(v); }
  bool string(json::string_t& v) { return put(std::move(v)); }
  bool binary(json::binary_t& v) { return put(json::binary(std::move(v))); }
  bool start_object(std::size_t) { return push(json::object()); }
  bool start_array(std::size_t) { return push(json::array()); }
  bool end_object() { return pop(); }
  bool end_array() { return pop(); }
  bool key(json::string_t& k) {
    if (stack_.back()->contains(k)) {
      error_ = fmt::format("duplicate key {}", json(k).dump(-1, ' ', false, json::error_handler_t::replace));
      return false;
    }
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    error_ = ex.what();
    const size_t p = error_.find("] ");  // drop "[json.exception.parse_error.101] "
    if (error_.starts_with("[json.exception") && p != std::string::npos) error_ = error_.substr(p + 2);
    return false;
  }
  const std::string& error() const { return error_; }

 private:
  json* place(json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(v);
    return &slot;
  }
  bool put(json v) {
    place(std::move(v));
    return true;
  }
  bool push(json v) {
    stack_.push_back(place(std::move(v)));
    return true;
  }
  bool pop() {
    stack_.pop_back();
    return true;
  }
  json& root_;
  std::vector<json*> stack_;
  std::string key_, error_;
};

}  // namespace

size_t json_nesting_depth(std::string_view text, size_t stop_above) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character cannot end the string
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > stop_above) break;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

std::optional<nlohmann::json> parse_json_strict(std::string_view text, std::string* error) {
  if (const size_t depth = json_nesting_depth(text); depth > kMaxJsonNesting) {
    if (error) *error = fmt::format("arrays and objects nested more than {} levels deep", kMaxJsonNesting);
    return std::nullopt;
  }
  // nlohmann's lexer takes a NUL byte for the end of input, which would accept "{}\0<anything>";
  // NUL is never valid in JSON text (raw control characters are not allowed even in strings).
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    if (error) *error = fmt::format("NUL byte at offset {}", nul);
    return std::nullopt;
  }
  nlohmann::json root;
  StrictSax sax(root);
  const bool ok = nlohmann::json::sax_parse(text, &sax, nlohmann::json::input_format_t::json, true);
  if (!ok) {
    if (error) *error = sax.error().empty() ? "invalid JSON" : sax.error();
    return std::nullopt;
  }
  return root;
}

std::string read_text_file(const std::string& path, std::string_view where) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail(where, "{}: cannot read: no such file", path);
  if (!std::filesystem::is_regular_file(path, ec)) fail(where, "{}: cannot read: not a regular file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(where, "{}: cannot read: {}", path, std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(where, "{}: cannot read: I/O error", path);
  return ss.str();
}

nlohmann::json read_json_file_lenient(const std::string& path, std::string_view where) {
  const std::string text = read_text_file(path, where);
  if (json_nesting_depth(text) > kMaxJsonNesting)
    fail(where, "{}: not valid JSON: arrays and objects nested more than {} levels deep", path, kMaxJsonNesting);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(where, "{}: not valid JSON: {}", path, e.what());
  }
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFile f(path, "io");
  f.write(bytes.data(), bytes.size());
  f.commit();
}

AtomicFile::AtomicFile(std::string path, std::string_view where)
    : path_(std::move(path)), tmp_(path_ + ".tmp"), where_(where) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(where_, "{}: cannot create: {}", tmp_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::write(fd_, p, std::min<size_t>(n, size_t(1) << 30));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) fail(where_, "{}: write failed: {}", tmp_, std::strerror(errno));
    p += k;
    n -= size_t(k);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) fail(where_, "{}: fsync failed: {}", tmp_, std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail(where_, "{}: close failed: {}", tmp_, std::strerror(errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    fail(where_, "cannot rename {} to {}: {}", tmp_, path_, std::strerror(errno));
  committed_ = true;
  // Make the rename itself durable (ecosystem.md §4.1); some filesystems refuse, which is fine.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace sft
