// Python str operations on UTF-8 text for the Jinja builtins (see jinja_pystr.cpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sft::jinja {

// ASCII-only case mapping (other bytes pass through unchanged).
std::string ascii_upper(std::string s);
std::string ascii_lower(std::string s);
bool is_ascii_alpha(char c);
// Python str.capitalize() and str.title(); Jinja's title filter (words start after [-\s({[<]).
std::string capitalize(const std::string& s);
std::string py_title(const std::string& s);
std::string jinja_title(const std::string& s);

// The code points of valid UTF-8 `s`, each as its UTF-8 bytes.
std::vector<std::string> code_points(const std::string& s);
// code_points(s).size() without building them (len() of a 64 MiB string in O(n), no allocation).
size_t code_point_count(const std::string& s);

// Python str.replace(old, new, count) (count < 0: all), str.split(sep, maxsplit) (no sep:
// runs of whitespace), str.strip/lstrip/rstrip(chars) (no chars: whitespace).
std::string py_replace(const std::string& s, const std::string& from, const std::string& to, int64_t count);
std::vector<std::string> py_split(const std::string& s, const std::optional<std::string>& sep, int64_t maxsplit);
std::string py_strip_chars(const std::string& s, const std::optional<std::string>& chars, bool left, bool right);

// Python int(s, base) and float(s); nullopt where Python raises ValueError.
std::optional<int64_t> parse_int(std::string s, int base);
std::optional<double> parse_float(const std::string& text);

// Jinja's escape (HTML: & < > " ') and indent filter (3.1: the first line and, unless `blank`,
// empty lines are not indented; `first` indents the first line too).
std::string html_escape(const std::string& s);
std::string jinja_indent(std::string s, const std::string& prefix, bool first, bool blank);

}  // namespace sft::jinja
