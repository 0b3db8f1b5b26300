// Python str operations on UTF-8 text, as the builtins need them: strip/split/replace/title with
// Python's rules (whitespace is str.isspace(); indices count code points), int()/float() parsing,
// Jinja's title and indent filters and its HTML escape. Case mapping is ASCII-only.
// Reference: Python str methods; jinja2/filters.py (do_title, do_indent, escape).
#include "data/jinja_pystr.h"

#include <cerrno>
#include <cctype>
#include <cstdlib>

#include "data/jinja_value.h"
#include "tokenizer/utf8.h"

namespace sft::jinja {

std::string ascii_upper(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  return s;
}
std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return s;
}
bool is_ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Python str.capitalize(): first character upper, the rest lower.
std::string capitalize(const std::string& s) {
  std::string out = ascii_lower(s);
  if (!out.empty()) out[0] = ascii_upper(out.substr(0, 1))[0];
  return out;
}

// Jinja's title filter: words start after runs of [-\s({[<].
std::string jinja_title(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (char c : s) {
    const bool sep = c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' ||
                     c == '(' || c == '{' || c == '[' || c == '<';
    if (sep) out += c, word_start = true;
    else out += word_start ? ascii_upper(std::string(1, c))[0] : ascii_lower(std::string(1, c))[0], word_start = false;
  }
  return out;
}

// Python str.title(): a letter after a non-letter starts a word.
std::string py_title(const std::string& s) {
  std::string out;
  bool prev_alpha = false;
  for (char c : s) {
    const bool a = is_ascii_alpha(c);
    out += a ? (prev_alpha ? ascii_lower(std::string(1, c))[0] : ascii_upper(std::string(1, c))[0]) : c;
    prev_alpha = a;
  }
  return out;
}

std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const size_t b = i;
    utf8::next(s, i);
    charge_work(kValueWork + (i - b));  // 32 bytes a piece: the render's budget bounds the vector
    out.push_back(s.substr(b, i - b));
  }
  return out;
}

size_t code_point_count(const std::string& s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) utf8::next(s, i);
  return n;
}

// Python str.replace(old, new, count).
std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {  // `to` before every code point
    int64_t done = 0;
    for (size_t i = 0; i < s.size();) {
      charge_work(kValueWork);  // a loop step per code point (60 M of them took 30 s under ASan)
      if (count < 0 || done < count) out += to, ++done;
      const size_t b = i;
      utf8::next(s, i);
      out.append(s, b, i - b);
      check_string_size(out.size(), "replace's result");
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
    ++done;
    check_string_size(out.size(), "replace's result");
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// Python str.split(sep=None, maxsplit=-1).
std::vector<std::string> py_split(const std::string& s, const std::optional<std::string>& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    size_t pos = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      const size_t hit = s.find(*sep, pos);
      if (hit == std::string::npos) break;
      charge_work(kValueWork + (hit - pos));  // as code_points
      out.emplace_back(s.substr(pos, hit - pos));
      pos = hit + sep->size();
    }
    out.emplace_back(s.substr(pos));
    return out;
  }
  size_t i = 0;
  auto is_space_at = [&](size_t p, size_t& next) {
    next = p;
    return utf8::is_py_space(utf8::next(s, next));
  };
  size_t nx;
  while (i < s.size()) {
    while (i < s.size() && is_space_at(i, nx)) i = nx;
    if (i >= s.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      std::string rest = s.substr(i);
      out.emplace_back(py_strip_chars(rest, std::nullopt, false, true));
      return out;
    }
    const size_t b = i;
    while (i < s.size() && !is_space_at(i, nx)) i = nx;
    charge_work(kValueWork + (i - b));
    out.emplace_back(s.substr(b, i - b));
  }
  return out;
}

std::string py_strip_chars(const std::string& s, const std::optional<std::string>& chars, bool left, bool right) {
  auto strip = [&](char32_t cp) {
    if (!chars) return utf8::is_py_space(cp);
    for (size_t i = 0; i < chars->size();)
      if (utf8::next(*chars, i) == cp) return true;
    return false;
  };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      size_t i = b;
      if (!strip(utf8::next(s, i))) break;
      b = i;
    }
  }
  if (right) {
    while (e > b) {
      size_t start = e - 1;
      while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      size_t i = start;
      if (!strip(utf8::next(s, i))) break;
      e = start;
    }
  }
  return s.substr(b, e - b);
}

// Python int(str): optional sign and surrounding whitespace, digits with single underscores.
std::optional<int64_t> parse_int(std::string s, int base) {
  s = py_strip_chars(s, std::nullopt, true, true);
  std::string digits;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_' && i > 0 && i + 1 < s.size() && s[i - 1] != '_' && s[i - 1] != '-' && s[i - 1] != '+') continue;
    digits += s[i];
  }
  if (digits.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(digits.c_str(), &end, base);
  if (*end != '\0' || errno == ERANGE || !(std::isdigit(static_cast<unsigned char>(digits.back())) || base > 10))
    return std::nullopt;
  return v;
}

std::optional<double> parse_float(const std::string& text) {
  const std::string s = py_strip_chars(text, std::nullopt, true, true);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (*end != '\0') return std::nullopt;
  return v;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Jinja's indent filter (3.1): lines after the first get the prefix; blank lines only with blank=True.
std::string jinja_indent(std::string s, const std::string& prefix, bool first, bool blank) {
  // Line by line in place (a vector of the lines held 32 bytes per line: 2 GB for 64 M newlines).
  std::string out;
  if (first) out = prefix;
  for (size_t b = 0;;) {
    charge_work(kValueWork);  // a loop step per line
    const size_t e = s.find('\n', b);
    const std::string_view line(s.data() + b, (e == std::string::npos ? s.size() : e) - b);
    if (b > 0) {
      out += '\n';
      if (blank || !line.empty()) out += prefix;
    }
    out += line;
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return out;
}

}  // namespace sft::jinja
