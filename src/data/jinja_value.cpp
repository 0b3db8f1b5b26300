// Values: conversion from JSON (order kept), Python truthiness, str()/repr(), ==/<, and
// json.dumps as HF's tojson filter calls it (ensure_ascii=False by default, indent, separators,
// sort_keys). Reference: CPython Objects/floatobject.c repr rules, Lib/json/encoder.py.
#include "data/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include <fmt/format.h>

#include "core/check.h"
#include "tokenizer/utf8.h"

namespace sft::jinja {

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items_)
    if (k == key) return &v;
  return nullptr;
}

void Dict::set(std::string key, Value value) {
  for (auto& [k, v] : items_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items_.emplace_back(std::move(key), std::move(value));
}

void Dict::append(std::string key, Value value) { items_.emplace_back(std::move(key), std::move(value)); }

void WorkMeter::exceeded() const {
  fail_at(template_name, pos,
          fmt::format("the template exceeded its work budget: {} units (about bytes written or compared, plus "
                      "loop iterations and calls) for a limit of {} ({}); a chat template needs a small part of "
                      "that, so this one is runaway or hostile",
                      used, limit, limit_note));
}

void check_string_size(size_t n, std::string_view what) {
  if (n > kMaxStringBytes)
    throw Error(fmt::format("[jinja] {} would be {} bytes, more than the {} a template may build", what, n,
                            kMaxStringBytes));
}

namespace {

// depth / holds_namespace / bytes of a list or dict from its items.
template <typename Items, typename Get>
void set_nesting(Value& v, const Items& items, Get get, std::string_view what) {
  int deepest = 0;
  uint64_t bytes = 0;
  for (const auto& item : items) {
    const Value& x = get(item, bytes);
    deepest = std::max<int>(deepest, x.depth);
    bytes += x.bytes;
    v.holds_namespace |= x.holds_namespace;
  }
  if (deepest + 1 > kMaxValueNesting)
    throw Error(fmt::format("[jinja] lists and dicts nested more than {} levels deep", kMaxValueNesting));
  check_string_size(bytes, what);
  v.depth = static_cast<uint16_t>(deepest + 1);
  v.bytes = bytes;
}

}  // namespace

Value::Value(List l) : data(std::make_shared<const List>(std::move(l))) {
  charge_work(list().size() * kValueWork);
  set_nesting(*this, list(), [](const Value& x, uint64_t&) -> const Value& { return x; }, "the strings of a list");
}

Value::Value(Dict d) : data(std::make_shared<const Dict>(std::move(d))) {
  charge_work(dict().size() * kValueWork);
  set_nesting(
      *this, dict(),
      [](const auto& kv, uint64_t& bytes) -> const Value& {
        bytes += kv.first.size();
        charge_work(kv.first.size());
        return kv.second;
      },
      "the strings of a dict");
}

void Value::not_an_int() const {
  throw Error(fmt::format("[jinja] an integer was expected here, got a '{}'", type_name()));
}

void Value::set_bytes() {
  bytes = str_ref().size();
  check_string_size(bytes, "a string");
  charge_work(bytes + kValueWork);
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value(None{});
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      return u <= static_cast<uint64_t>(INT64_MAX) ? Value(static_cast<int64_t>(u)) : Value(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(from_json(e));
      return Value(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;  // JSON object keys are unique (nlohmann keeps the last of duplicates)
      d.reserve(j.size());
      for (const auto& [k, v] : j.items()) d.append(k, from_json(v));
      return Value(std::move(d));
    }
    default: return Value(None{});
  }
}

bool Value::truthy() const {
  return std::visit(
      [](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Undefined> || std::is_same_v<T, None>) return false;
        else if constexpr (std::is_same_v<T, bool>) return x;
        else if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, double>) return x != 0;
        else if constexpr (std::is_same_v<T, std::string>) return !x.empty();
        else if constexpr (std::is_same_v<T, ListPtr> || std::is_same_v<T, DictPtr>) return !x->empty();
        else return true;
      },
      data);
}

std::string Value::type_name() const {
  static constexpr const char* kNames[] = {"Undefined", "NoneType", "bool", "int", "float", "str",
                                           "list", "dict", "Namespace", "function"};
  return kNames[data.index()];
}

std::string float_repr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  if (f == 0) return std::signbit(f) ? "-0.0" : "0.0";
  // Shortest round-trip digits in scientific form, then CPython's layout rule: positional for
  // decimal exponents -4 <= e < 16, scientific otherwise.
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), f, std::chars_format::scientific);
  std::string sci(buf, end);
  const size_t epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  const int exp = std::stoi(sci.substr(epos + 1));
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out = "0." + std::string(-exp - 1, '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += fmt::format("e{}{:02d}", exp < 0 ? '-' : '+', std::abs(exp));
  }
  return neg ? "-" + out : out;
}

namespace {

// Python's str.isprintable() for one code point: false for controls, separators other than the
// space, format characters and private use. Unassigned code points (which Python also escapes)
// are not tabulated here and print as themselves.
bool is_py_printable(char32_t cp) {
  if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) return false;
  if ((cp >= 0x600 && cp <= 0x605) || cp == 0x61c || cp == 0x6dd || cp == 0x70f || cp == 0x1680 || cp == 0x180e) return false;
  if ((cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) || (cp >= 0x205f && cp <= 0x206f)) return false;
  if (cp == 0x3000 || (cp >= 0xe000 && cp <= 0xf8ff) || cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb)) return false;
  if (cp == 0xfffe || cp == 0xffff || cp >= 0xf0000 || cp == 0xe0001 || (cp >= 0xe0020 && cp <= 0xe007f)) return false;
  return true;
}

// Python repr() of a str: single quotes unless the text has ' and no "; non-printable
// characters as \xhh, \uhhhh or \Uhhhhhhhh.
std::string string_repr(const std::string& s) {
  const char q = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, q);
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t cp = utf8::next(s, i);
    if (cp == '\\') out += "\\\\";
    else if (cp == static_cast<char32_t>(q)) out += '\\', out += q;
    else if (cp == '\n') out += "\\n";
    else if (cp == '\r') out += "\\r";
    else if (cp == '\t') out += "\\t";
    else if (is_py_printable(cp)) out.append(s, start, i - start);
    else if (cp <= 0xff) out += fmt::format("\\x{:02x}", static_cast<uint32_t>(cp));
    else if (cp <= 0xffff) out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
    else out += fmt::format("\\U{:08x}", static_cast<uint32_t>(cp));
  }
  return out + q;
}

}  // namespace

std::string Value::str() const {
  if (is_undefined()) return "";
  if (is_string()) return str_ref();
  return repr();
}

std::string Value::repr() const {
  return std::visit(
      [tuple = tuple](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Undefined>) return "";
        else if constexpr (std::is_same_v<T, None>) return "None";
        else if constexpr (std::is_same_v<T, bool>) return x ? "True" : "False";
        else if constexpr (std::is_same_v<T, int64_t>) return std::to_string(x);
        else if constexpr (std::is_same_v<T, double>) return float_repr(x);
        else if constexpr (std::is_same_v<T, std::string>) return string_repr(x);
        else if constexpr (std::is_same_v<T, ListPtr>) {
          std::string out = tuple ? "(" : "[";
          for (size_t i = 0; i < x->size(); ++i) {
            out += (i ? ", " : "") + (*x)[i].repr();
            check_string_size(out.size(), "a printed list");
          }
          if (tuple) return out + (x->size() == 1 ? ",)" : ")");
          return out + "]";
        } else if constexpr (std::is_same_v<T, DictPtr>) {
          std::string out = "{";
          bool first = true;
          for (const auto& [k, v] : *x) {
            out += (first ? "" : ", ") + string_repr(k) + ": " + v.repr(), first = false;
            check_string_size(out.size(), "a printed dict");
          }
          return out + "}";
        } else if constexpr (std::is_same_v<T, NamespacePtr>) {
          std::string out = "<Namespace {";
          bool first = true;
          for (const auto& [k, v] : x->attrs) {
            out += (first ? "" : ", ") + string_repr(k) + ": " + v.repr(), first = false;
            check_string_size(out.size(), "a printed namespace");
          }
          return out + "}>";
        } else {
          return "<function " + x->name + ">";
        }
      },
      data);
}

bool equal(const Value& a, const Value& b) {
  charge_work(kCompareWork + (a.is_string() && b.is_string() ? std::min(a.bytes, b.bytes) : 0));
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.data.index() != b.data.index()) return false;
  if (a.is_undefined() || a.is_none()) return true;
  if (a.is_string()) return a.str_ref() == b.str_ref();
  if (a.is_list()) {
    const List &x = a.list(), &y = b.list();
    if (x.size() != y.size() || a.tuple != b.tuple) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!equal(x[i], y[i])) return false;
    return true;
  }
  if (a.is_dict()) {
    if (a.dict().size() != b.dict().size()) return false;
    for (const auto& [k, v] : a.dict()) {
      const Value* w = b.dict().find(k);
      if (!w || !equal(v, *w)) return false;
    }
    return true;
  }
  if (a.is_namespace()) return &a.ns() == &b.ns();
  return &a.function() == &b.function();
}

std::optional<bool> less(const Value& a, const Value& b) {
  charge_work(kCompareWork + (a.is_string() && b.is_string() ? std::min(a.bytes, b.bytes) : 0));
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.str_ref() < b.str_ref();  // UTF-8 byte order == code point order
  if (a.is_list() && b.is_list()) {
    const List &x = a.list(), &y = b.list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equal(x[i], y[i])) continue;
      return less(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return std::nullopt;
}

namespace {

void json_string(const std::string& s, bool ensure_ascii, std::string& out) {
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80 && ensure_ascii) {
      const char32_t cp = utf8::next(s, i);
      if (cp >= 0x10000) {
        const char32_t v = cp - 0x10000;
        out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
      } else {
        out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
      }
      continue;
    }
    ++i;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ensure_ascii && c == 0x7f)) out += fmt::format("\\u{:04x}", c);
        else out += static_cast<char>(c);
    }
  }
  out += '"';
}

struct JsonWriter {
  const JsonOptions& opts;
  std::string item_sep, key_sep;
  std::string* bad_type;
  std::string out;

  bool write(const Value& v, int level) {
    if (v.is_none()) out += "null";
    else if (v.is_bool()) out += std::get<bool>(v.data) ? "true" : "false";
    else if (v.is_int()) out += std::to_string(v.as_int());
    else if (v.is_float()) {
      const double f = v.as_double();
      out += std::isnan(f) ? "NaN" : std::isinf(f) ? (f > 0 ? "Infinity" : "-Infinity") : float_repr(f);
    } else if (v.is_string()) json_string(v.str_ref(), opts.ensure_ascii, out);
    else if (v.is_list()) {
      if (v.list().empty()) return out += "[]", true;
      out += '[';
      for (size_t i = 0; i < v.list().size(); ++i) {
        out += i ? item_sep : "";
        newline(level + 1);
        if (!write(v.list()[i], level + 1)) return false;
        check_string_size(out.size(), "tojson's text");
      }
      newline(level);
      out += ']';
    } else if (v.is_dict()) {
      if (v.dict().empty()) return out += "{}", true;
      std::vector<std::pair<std::string, const Value*>> entries;
      for (const auto& [k, x] : v.dict()) entries.emplace_back(k, &x);
      if (opts.sort_keys) std::stable_sort(entries.begin(), entries.end(), [](auto& a, auto& b) { return a.first < b.first; });
      out += '{';
      for (size_t i = 0; i < entries.size(); ++i) {
        out += i ? item_sep : "";
        newline(level + 1);
        json_string(entries[i].first, opts.ensure_ascii, out);
        out += key_sep;
        if (!write(*entries[i].second, level + 1)) return false;
        check_string_size(out.size(), "tojson's text");
      }
      newline(level);
      out += '}';
    } else {
      *bad_type = v.type_name();
      return false;
    }
    return true;
  }

  void newline(int level) {
    if (!opts.indent) return;
    out += '\n';
    check_string_size(out.size() + opts.indent->size() * size_t(level), "tojson's text");
    for (int i = 0; i < level; ++i) out += *opts.indent;
  }
};

}  // namespace

std::optional<std::string> to_json(const Value& v, const JsonOptions& opts, std::string* bad_type) {
  // json.dumps: item separator ", " without indent, "," with it; key separator ": ".
  JsonWriter w{opts, opts.indent ? "," : ", ", ": ", bad_type, {}};
  if (opts.separators) w.item_sep = opts.separators->first, w.key_sep = opts.separators->second;
  if (!w.write(v, 0)) return std::nullopt;
  return std::move(w.out);
}

}  // namespace sft::jinja
