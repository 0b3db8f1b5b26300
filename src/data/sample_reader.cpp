// SampleFile: mmap + a bracket/string scanner that finds the top-level elements of a JSON array
// (or the lines of JSON Lines) without building a document, so a 1 GB file costs its page cache
// plus 24 bytes per sample. parse_sample: nlohmann::json on one sample, then the format's fields
// into RawMessages for normalize_messages(). Alpaca becomes a conversation as FastChat's
// fastchat/data/convert_alpaca.py does (instruction + "\nInput:\n" + input when input has > 1 char).
#include "data/sample_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/file_util.h"
#include "core/fingerprint.h"
#include "data/chat_template.h"
#include "tokenizer/utf8.h"

namespace sft {

DataFormat parse_data_format(std::string_view name) {
  if (name == "auto") return DataFormat::auto_;
  if (name == "sharegpt") return DataFormat::sharegpt;
  if (name == "messages") return DataFormat::messages;
  if (name == "alpaca") return DataFormat::alpaca;
  fail("data", "unknown data format '{}' (auto | sharegpt | messages | alpaca)", name);
}

std::string_view data_format_name(DataFormat f) {
  switch (f) {
    case DataFormat::auto_: return "auto";
    case DataFormat::sharegpt: return "sharegpt";
    case DataFormat::messages: return "messages";
    case DataFormat::alpaca: return "alpaca";
  }
  return "?";
}

namespace {

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Scans one JSON value starting at `pos` (not whitespace) and returns the offset just past it:
// strings and brackets are tracked, scalars end at ',' ']' '}' or whitespace at depth 0. Counts
// newlines into `lines`. Returns npos when the data ends inside the value; sets `err` on a
// mismatched bracket.
size_t scan_value(const char* d, size_t n, size_t pos, int64_t& lines, std::string& err) {
  std::string stack;
  while (pos < n) {
    const char c = d[pos];
    if (c == '"') {
      for (++pos; pos < n && d[pos] != '"'; ++pos) {
        if (d[pos] == '\\') ++pos;
        else if (d[pos] == '\n') ++lines;
      }
      if (pos >= n) return std::string::npos;
      ++pos;
    } else if (c == '{' || c == '[') {
      stack += c;
      ++pos;
    } else if (c == '}' || c == ']') {
      if (stack.empty()) return pos;
      if (stack.back() != (c == '}' ? '{' : '[')) {
        err = fmt::format("mismatched '{}' at byte {}", c, pos);
        return std::string::npos;
      }
      stack.pop_back();
      ++pos;
    } else if (stack.empty() && (c == ',' || is_ws(c))) {
      return pos;
    } else {
      if (c == '\n') ++lines;
      ++pos;
    }
    if (stack.empty() && pos < n && (d[pos] == ',' || d[pos] == ']' || d[pos] == '}' || is_ws(d[pos]))) return pos;
  }
  return stack.empty() ? pos : std::string::npos;
}

}  // namespace

SampleFile::SampleFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("data", "{}: cannot open ({})", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("data", "{}: not a regular file", path);
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ == 0) {
    ::close(fd);
    fail("data", "{}: empty file (0 bytes)", path);
  }
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) fail("data", "{}: cannot map ({})", path, std::strerror(errno));
  data_ = static_cast<const char*>(p);
  ::madvise(p, size_, MADV_SEQUENTIAL);
  size_t pos = 0;
  if (size_ >= 3 && std::memcmp(data_, "\xEF\xBB\xBF", 3) == 0) pos = 3;  // UTF-8 byte-order mark
  while (pos < size_ && is_ws(data_[pos])) ++pos;
  try {
    Xxh3Stream hash;
    if (pos == size_) fail("data", "{}: no JSON in the file (only whitespace)", path);
    if (data_[pos] == '[') {
      split_array(pos, hash);
      hash_upto(hash, size_, true);
    } else if (data_[pos] == '{') {
      json_lines_ = true;
      split_lines(hash);
      hash_upto(hash, size_, true);
    } else {
      fail("data", "{}: not JSON: expected a JSON array of samples or JSON Lines, found '{}' at byte {}", path,
           utf8::lossy(std::string_view(data_ + pos, std::min<size_t>(utf8::seq_len(data_[pos]), size_ - pos))), pos);
    }
  } catch (...) {
    ::munmap(const_cast<char*>(data_), size_);
    throw;
  }
}

SampleFile::~SampleFile() {
  if (data_) ::munmap(const_cast<char*>(data_), size_);
}

std::string_view SampleFile::text(int64_t i) const {
  const auto& r = ranges_.at(static_cast<size_t>(i));
  return std::string_view(data_ + r.first, r.second - r.first);
}

void SampleFile::release_before(size_t offset) const {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t n = std::min(offset, size_) / page * page;
  if (n > 0) ::madvise(const_cast<char*>(data_), n, MADV_DONTNEED);
}

int64_t SampleFile::line(int64_t i) const { return lines_.at(static_cast<size_t>(i)); }

void SampleFile::hash_upto(Xxh3Stream& hash, size_t offset, bool last) {
  constexpr size_t kBlock = size_t(64) << 20;
  offset = std::min(offset, size_);
  if (offset <= hashed_ || (!last && offset - hashed_ < kBlock)) return;
  hash.update(data_ + hashed_, offset - hashed_);
  hashed_ = offset;
  release_before(offset);
  if (last && offset == size_) xxh3_ = hash.digest();
}

void SampleFile::split_array(size_t pos, Xxh3Stream& hash) {
  const char* d = data_;
  int64_t line = 1 + std::count(d, d + pos, '\n');
  ++pos;  // '['
  bool expect_value = false;  // after a ','
  for (;;) {
    while (pos < size_ && is_ws(d[pos])) line += d[pos++] == '\n';
    if (pos == size_) fail("data", "{}: the JSON array is not closed (the file ends at line {})", path_, line);
    if (d[pos] == ']' && !expect_value) {
      ++pos;
      break;
    }
    const size_t begin = pos;
    const int64_t begin_line = line;
    std::string err;
    const size_t end = scan_value(d, size_, pos, line, err);
    if (!err.empty()) fail("data", "{}: not JSON: {} (line {})", path_, err, line);
    if (end == std::string::npos) fail("data", "{}: the JSON array is not closed: the value at line {} never ends", path_, begin_line);
    if (end == begin) fail("data", "{}: not JSON: expected a value at line {}, found '{}'", path_, line, d[pos]);
    ranges_.emplace_back(begin, end);
    lines_.push_back(begin_line);
    hash_upto(hash, begin);
    pos = end;
    while (pos < size_ && is_ws(d[pos])) line += d[pos++] == '\n';
    if (pos < size_ && d[pos] == ',') {
      ++pos;
      expect_value = true;
    } else if (pos < size_ && d[pos] == ']') {
      ++pos;
      break;
    } else if (pos == size_) {
      fail("data", "{}: the JSON array is not closed (the file ends at line {})", path_, line);
    } else {
      fail("data", "{}: not JSON: expected ',' or ']' after the sample at line {} (line {})", path_, begin_line, line);
    }
  }
  while (pos < size_ && is_ws(d[pos])) line += d[pos++] == '\n';
  if (pos != size_) fail("data", "{}: not JSON: unexpected data after the closing ']' (line {})", path_, line);
}

void SampleFile::split_lines(Xxh3Stream& hash) {
  const char* d = data_;
  int64_t line = 1;
  for (size_t pos = 0; pos < size_;) {
    const char* nl = static_cast<const char*>(std::memchr(d + pos, '\n', size_ - pos));
    size_t end = nl ? static_cast<size_t>(nl - d) : size_;
    size_t b = pos, e = end;
    if (line == 1 && e - b >= 3 && std::memcmp(d + b, "\xEF\xBB\xBF", 3) == 0) b += 3;
    while (b < e && is_ws(d[b])) ++b;
    while (e > b && is_ws(d[e - 1])) --e;
    if (b < e) {
      if (ranges_.empty() && d[b] == '{') {
        // A first line that does not hold a whole value: a pretty-printed object, not JSON Lines.
        int64_t l = 0;
        std::string err;
        const size_t v = scan_value(d, size_, b, l, err);
        if (v != std::string::npos && v > e) {
          size_t rest = v;
          while (rest < size_ && is_ws(d[rest])) ++rest;
          if (rest == size_)
            fail("data", "{}: JSON that is not a list of samples: the file holds one object (expected a JSON array "
                 "of samples, or JSON Lines)", path_);
          fail("data", "{}: not JSON Lines: the object starting at line {} spans several lines", path_, line);
        }
      }
      ranges_.emplace_back(b, e);
      lines_.push_back(line);
    }
    hash_upto(hash, pos);
    pos = end + 1;
    ++line;
  }
}

DataFormat SampleFile::detect_format() const {
  for (int64_t i = 0; i < size(); ++i) {
    nlohmann::json j = nlohmann::json::parse(text(i), nullptr, false);
    if (!j.is_object()) continue;
    if (j.contains("conversations")) return DataFormat::sharegpt;
    if (j.contains("messages")) return DataFormat::messages;
    if (j.contains("instruction")) return DataFormat::alpaca;
    return DataFormat::sharegpt;
  }
  return DataFormat::sharegpt;
}

namespace {

using json = nlohmann::ordered_json;  // key order kept: tool arguments and tool lists are printed by tojson

SampleIssue schema(std::string detail) { return SampleIssue{-1, 0, IssueKind::bad_schema, std::move(detail)}; }
SampleIssue bad_call(std::string detail) { return SampleIssue{-1, 0, IssueKind::bad_tool_call, std::move(detail)}; }

// One call: {"name": str, "arguments": any} (ShareGPT's function_call value, or OpenAI's
// "function" object), or OpenAI's {"type": "function", "id"?, "function": {...}}.
std::optional<SampleIssue> read_tool_call(const json& v, size_t j, size_t k, std::vector<ToolCall>& out) {
  const json* fn = &v;
  ToolCall call;
  if (v.is_object() && v.contains("function")) {
    if (auto t = v.find("type"); t != v.end() && *t != "function")
      return bad_call(fmt::format("message {}: tool call {}: type is {}, expected \"function\"", j, k, t->dump()));
    if (auto id = v.find("id"); id != v.end() && !id->is_null()) {
      if (!id->is_string()) return bad_call(fmt::format("message {}: tool call {}: 'id' is not a string", j, k));
      call.id = id->get<std::string>();
    }
    fn = &v["function"];
  }
  if (!fn->is_object() || !fn->contains("name") || !(*fn)["name"].is_string())
    return bad_call(fmt::format("message {}: tool call {} is not {{\"name\": str, \"arguments\": ...}}: {}", j, k,
                                fn->dump().substr(0, 80)));
  call.name = (*fn)["name"].get<std::string>();
  auto a = fn->find("arguments");
  if (a == fn->end()) return bad_call(fmt::format("message {}: tool call {} ('{}') has no 'arguments'", j, k, call.name));
  call.arguments = a->dump();
  out.push_back(std::move(call));
  return std::nullopt;
}

// A list of calls or a single call.
std::optional<SampleIssue> read_tool_calls(const json& v, size_t j, std::vector<ToolCall>& out) {
  if (v.is_array()) {
    if (v.empty()) return bad_call(fmt::format("message {}: an empty list of tool calls", j));
    for (size_t k = 0; k < v.size(); ++k)
      if (auto e = read_tool_call(v[k], j, k, out)) return e;
    return std::nullopt;
  }
  return read_tool_call(v, j, 0, out);
}

// ShareGPT's function_call / tool_call value: JSON text of one call or a list of calls.
std::optional<SampleIssue> parse_function_call(const std::string& text, size_t j, std::vector<ToolCall>& out) {
  json v;
  if (json_nesting_depth(text) > kMaxJsonNesting)  // dump() of the arguments recurses per level
    return bad_call(fmt::format("message {}: the function_call value nests arrays and objects more than {} levels deep",
                                j, kMaxJsonNesting));
  try {
    v = json::parse(text);
  } catch (const json::exception& e) {
    std::string msg = utf8::lossy(e.what());
    if (size_t p = msg.find("] "); msg.starts_with("[json.exception") && p != std::string::npos) msg.erase(0, p + 2);
    return bad_call(fmt::format("message {}: the function_call value is not JSON {{\"name\", \"arguments\"}}: {}", j, msg));
  }
  return read_tool_calls(v, j, out);
}

// The sample's tools: a list (or, as in ShareGPT files, JSON text of a list) of function specs.
// A bare spec {"name", ...} becomes {"type": "function", "function": spec}, the shape HF's
// templates read; an empty list or empty text means no tools.
std::optional<SampleIssue> read_tools(const json& obj, std::string& tools) {
  auto it = obj.find("tools");
  if (it == obj.end() || it->is_null()) return std::nullopt;
  json list;
  if (it->is_string()) {
    const std::string& text = it->get_ref<const std::string&>();
    if (py_strip(text).empty()) return std::nullopt;
    if (json_nesting_depth(text) > kMaxJsonNesting)
      return schema(fmt::format("'tools' nests arrays and objects more than {} levels deep", kMaxJsonNesting));
    try {
      list = json::parse(text);
    } catch (const json::exception& e) {
      std::string msg = utf8::lossy(e.what());
      if (size_t p = msg.find("] "); msg.starts_with("[json.exception") && p != std::string::npos) msg.erase(0, p + 2);
      return schema(fmt::format("'tools' is a string that is not JSON: {}", msg));
    }
  } else {
    list = *it;
  }
  if (!list.is_array()) return schema(fmt::format("'tools' is a {}, expected a list of function specs", list.type_name()));
  if (list.empty()) return std::nullopt;
  json out = json::array();
  for (size_t k = 0; k < list.size(); ++k) {
    json& t = list[k];
    if (!t.is_object()) return schema(fmt::format("tools {}: not an object", k));
    if (t.contains("function") || t.contains("type")) {
      out.push_back(std::move(t));
    } else if (t.contains("name")) {
      json wrapped = json::object();
      wrapped["type"] = "function";
      wrapped["function"] = std::move(t);
      out.push_back(std::move(wrapped));
    } else {
      return schema(fmt::format("tools {}: neither a function spec {{\"name\", ...}} nor {{\"type\": \"function\", "
                                "\"function\": ...}}", k));
    }
  }
  tools = out.dump();
  return std::nullopt;
}

// A text field: a string, or (messages format) a list of {"type": "text", "text": ...} parts.
std::optional<std::string> text_field(const json& v, bool allow_parts) {
  if (v.is_string()) return v.get<std::string>();
  if (allow_parts && v.is_array()) {
    std::string out;
    for (const json& part : v) {
      if (!part.is_object() || !part.contains("text") || !part["text"].is_string()) return std::nullopt;
      out += part["text"].get<std::string>();
    }
    return out;
  }
  return std::nullopt;
}

std::optional<SampleIssue> read_system(const json& obj, std::optional<std::string>& system) {
  auto it = obj.find("system");
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) return schema("'system' is not a string");
  system = it->get<std::string>();
  return std::nullopt;
}

std::optional<SampleIssue> read_turns(const json& obj, const char* list_key, const char* role_key,
                                      const char* text_key, std::vector<RawMessage>& out) {
  auto it = obj.find(list_key);
  if (it == obj.end()) return schema(fmt::format("no '{}' list", list_key));
  if (!it->is_array()) return schema(fmt::format("'{}' is not a list", list_key));
  out.reserve(it->size());
  for (size_t j = 0; j < it->size(); ++j) {
    const json& m = (*it)[j];
    if (!m.is_object()) return schema(fmt::format("message {}: not an object", j));
    auto r = m.find(role_key);
    if (r == m.end() || !r->is_string()) return schema(fmt::format("message {}: no '{}' string", j, role_key));
    const bool messages = list_key[0] == 'm';
    RawMessage raw{r->get<std::string>(), std::string()};
    auto calls = messages ? m.find("tool_calls") : m.end();
    const bool has_calls = calls != m.end() && !calls->is_null() && !(calls->is_array() && calls->empty());
    auto t = m.find(text_key);
    std::optional<std::string> text = t == m.end() ? std::nullopt : text_field(*t, messages);
    if (!text && !(has_calls && (t == m.end() || t->is_null())))  // a message with tool calls may have no content
      return schema(fmt::format("message {}: '{}' is missing or not a string", j, text_key));
    if (text) raw.content = std::move(*text);
    if (has_calls) {
      if (auto e = read_tool_calls(*calls, j, raw.tool_calls)) return e;
    } else if (is_tool_call_role(raw.role)) {
      if (auto e = parse_function_call(raw.content, j, raw.tool_calls)) return e;
      raw.content.clear();
    }
    if (messages) {
      for (auto [key, field] : {std::pair{"name", &raw.name}, std::pair{"tool_call_id", &raw.tool_call_id}}) {
        auto f = m.find(key);
        if (f == m.end() || f->is_null() || parse_role(raw.role) != Role::tool) continue;
        if (!f->is_string()) return schema(fmt::format("message {}: '{}' is not a string", j, key));
        *field = f->get<std::string>();
      }
    }
    out.push_back(std::move(raw));
  }
  return std::nullopt;
}

std::optional<SampleIssue> read_alpaca(const json& obj, std::vector<RawMessage>& out) {
  const auto str = [&](const char* key, bool required, std::string& v) -> std::optional<SampleIssue> {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
      if (required) return schema(fmt::format("no '{}' string", key));
      return std::nullopt;
    }
    if (!it->is_string()) return schema(fmt::format("'{}' is not a string", key));
    v = it->get<std::string>();
    return std::nullopt;
  };
  std::string instruction, input, output;
  if (auto e = str("instruction", true, instruction)) return e;
  if (auto e = str("input", false, input)) return e;
  if (auto e = str("output", true, output)) return e;
  if (auto h = obj.find("history"); h != obj.end() && !h->is_null()) {
    if (!h->is_array()) return schema("'history' is not a list of [question, answer] pairs");
    for (size_t k = 0; k < h->size(); ++k) {
      const json& pair = (*h)[k];
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_string())
        return schema(fmt::format("history {}: not a [question, answer] pair of strings", k));
      out.push_back(RawMessage{"user", pair[0].get<std::string>()});
      out.push_back(RawMessage{"assistant", pair[1].get<std::string>()});
    }
  }
  std::string_view stripped = py_strip(input);
  size_t chars = 0;
  for (size_t i = 0; i < stripped.size(); ++chars) i += utf8::seq_len(static_cast<unsigned char>(stripped[i]));
  out.push_back(RawMessage{"user", chars > 1 ? instruction + "\nInput:\n" + input : instruction});
  out.push_back(RawMessage{"assistant", std::move(output)});
  return std::nullopt;
}

SampleIssue json_issue(const std::string& what) {
  std::string msg = utf8::lossy(what);
  if (size_t p = msg.find("; last read:"); p != std::string::npos) msg.resize(p);
  if (size_t p = msg.find("] "); msg.starts_with("[json.exception") && p != std::string::npos) msg.erase(0, p + 2);
  const bool utf = msg.find("UTF-8") != std::string::npos || msg.find("surrogate") != std::string::npos;
  return SampleIssue{-1, 0, utf ? IssueKind::invalid_utf8 : IssueKind::invalid_json, msg};
}

}  // namespace

ParsedSample parse_sample(std::string_view text, DataFormat fmt, Conversation& out) {
  ParsedSample res;
  json obj;
  // Deeper text is refused before it is parsed: dump() and copies of nested values recurse per level.
  if (json_nesting_depth(text) > kMaxJsonNesting) {
    res.issue = SampleIssue{-1, 0, IssueKind::invalid_json,
                            fmt::format("arrays and objects nested more than {} levels deep", kMaxJsonNesting)};
    return res;
  }
  try {
    obj = json::parse(text);
  } catch (const json::exception& e) {
    res.issue = json_issue(e.what());
    return res;
  }
  if (!obj.is_object()) {
    res.issue = schema("the sample is not a JSON object");
    return res;
  }
  std::vector<RawMessage> raw;
  std::optional<std::string> system;
  std::string tools;
  std::optional<SampleIssue> issue = read_system(obj, system);
  if (!issue && fmt != DataFormat::alpaca) issue = read_tools(obj, tools);
  if (!issue) {
    switch (fmt) {
      case DataFormat::auto_:
      case DataFormat::sharegpt: issue = read_turns(obj, "conversations", "from", "value", raw); break;
      case DataFormat::messages: issue = read_turns(obj, "messages", "role", "content", raw); break;
      case DataFormat::alpaca: issue = read_alpaca(obj, raw); break;
    }
  }
  if (issue) {
    res.issue = std::move(issue);
    return res;
  }
  NormalizeResult n = normalize_messages(std::move(raw), std::move(system), out);
  out.tools = std::move(tools);
  res.issue = std::move(n.issue);
  res.dropped_leading_assistant = n.dropped_leading_assistant;
  return res;
}

}  // namespace sft
