// Builtin filters, tests, Python methods and globals, each written to match what Jinja2 3.1 (and
// HF's overrides: tojson, raise_exception, strftime_now) returns for the value types chat data
// has. Case mapping (upper, lower, title, capitalize) is ASCII-only: other letters pass through.
// Reference: jinja2/filters.py, jinja2/tests.py, jinja2/defaults.py; Python str methods.
#include "data/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <ctime>

#include <fmt/format.h>

#include "data/jinja_pystr.h"
#include "tokenizer/utf8.h"

namespace sft::jinja {

namespace {

// Binds positional and keyword arguments to a builtin's parameter names, Python style.
class Args {
 public:
  Args(Evaluator& ev, std::string_view fn, const CallArgs& a, std::initializer_list<std::string_view> names, SourcePos pos)
      : a_(a), names_(names) {
    if (a.pos.size() > names_.size())
      ev.fail(pos, fmt::format("{}() takes at most {} arguments, {} given", fn, names_.size(), a.pos.size()));
    for (const auto& [k, v] : a.kw) {
      auto it = std::find(names_.begin(), names_.end(), k);
      if (it == names_.end()) ev.fail(pos, fmt::format("{}() got an unexpected keyword argument '{}'", fn, k));
      if (static_cast<size_t>(it - names_.begin()) < a.pos.size())
        ev.fail(pos, fmt::format("{}() got multiple values for argument '{}'", fn, k));
    }
  }
  const Value* get(size_t i) const {
    if (i < a_.pos.size()) return &a_.pos[i];
    for (const auto& [k, v] : a_.kw)
      if (k == names_[i]) return &v;
    return nullptr;
  }
  Value get_or(size_t i, Value dflt) const {
    const Value* v = get(i);
    return v ? *v : dflt;
  }

 private:
  const CallArgs& a_;
  std::vector<std::string_view> names_;
};

List as_items(Evaluator& ev, const Value& v, SourcePos pos) {
  if (v.is_list()) return v.list();
  if (v.is_undefined()) return {};
  List out;
  if (v.is_dict()) {
    for (const auto& [k, x] : v.dict()) out.emplace_back(k);
  } else if (v.is_string()) {
    for (std::string& cp : code_points(v.str_ref())) out.emplace_back(std::move(cp));
  } else {
    ev.fail(pos, fmt::format("'{}' object is not iterable", v.type_name()));
  }
  return out;
}

int64_t length_of(Evaluator& ev, const Value& v, SourcePos pos) {
  if (v.is_string()) return static_cast<int64_t>(code_point_count(v.str_ref()));
  if (v.is_list()) return static_cast<int64_t>(v.list().size());
  if (v.is_dict()) return static_cast<int64_t>(v.dict().size());
  if (v.is_undefined()) return 0;
  ev.fail(pos, fmt::format("object of type '{}' has no len()", v.type_name()));
}

// Jinja's attribute path for map/selectattr/sort/join: "a.b.0" (integer parts index lists).
Value attr_path(Evaluator& ev, const Value& item, const std::string& path, SourcePos pos) {
  Value cur = item;
  size_t b = 0;
  while (true) {
    const size_t e = path.find('.', b);
    const std::string part = path.substr(b, e == std::string::npos ? std::string::npos : e - b);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits && cur.is_list()) {
      const size_t i = std::stoul(part);
      cur = i < cur.list().size() ? cur.list()[i] : Value(Undefined{part});
    } else {
      cur = ev.get_attr(cur, part, pos);
    }
    if (e == std::string::npos) return cur;
    b = e + 1;
  }
}

// select/reject/selectattr/rejectattr: keep items whose test (or truthiness) equals `keep`.
Value filter_items(Evaluator& ev, const Value& seq, const CallArgs& args, bool by_attr, bool keep, SourcePos pos) {
  size_t k = 0;
  std::string attr;
  if (by_attr) {
    if (args.pos.empty() || !args.pos[0].is_string()) ev.fail(pos, "selectattr/rejectattr need an attribute name");
    attr = args.pos[k++].str_ref();
  }
  std::optional<std::string> test;
  if (k < args.pos.size()) {
    if (!args.pos[k].is_string()) ev.fail(pos, "the test name must be a string");
    test = args.pos[k++].str_ref();
  }
  CallArgs test_args;
  test_args.pos.assign(args.pos.begin() + static_cast<std::ptrdiff_t>(k), args.pos.end());
  test_args.kw = args.kw;
  List out;
  for (const Value& item : as_items(ev, seq, pos)) {
    const Value v = by_attr ? attr_path(ev, item, attr, pos) : item;
    const bool pass = test ? apply_test(ev, *test, v, test_args, pos) : v.truthy();
    if (pass == keep) out.push_back(item);
  }
  return Value(std::move(out));
}

Value filter_map(Evaluator& ev, const Value& seq, const CallArgs& args, SourcePos pos) {
  List out;
  if (args.pos.empty()) {  // map(attribute='x', default=...)
    const Value* attr = nullptr;
    const Value* dflt = nullptr;
    for (const auto& [k, v] : args.kw) {
      if (k == "attribute") attr = &v;
      else if (k == "default") dflt = &v;
      else ev.fail(pos, fmt::format("map() got an unexpected keyword argument '{}'", k));
    }
    if (!attr) ev.fail(pos, "map() needs a filter name or attribute=");
    for (const Value& item : as_items(ev, seq, pos)) {
      Value v = attr_path(ev, item, attr->str(), pos);
      out.push_back(v.is_undefined() && dflt ? *dflt : v);
    }
    return Value(std::move(out));
  }
  if (!args.pos[0].is_string()) ev.fail(pos, "map() expects a filter name");
  CallArgs rest;
  rest.pos.assign(args.pos.begin() + 1, args.pos.end());
  rest.kw = args.kw;
  for (const Value& item : as_items(ev, seq, pos)) out.push_back(apply_filter(ev, args.pos[0].str_ref(), item, rest, pos));
  return Value(std::move(out));
}

Value filter_tojson(Evaluator& ev, const Value& v, const CallArgs& args, SourcePos pos) {
  // HF: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> json.dumps.
  Args a(ev, "tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"}, pos);
  JsonOptions o;
  o.ensure_ascii = a.get_or(0, Value(false)).truthy();
  const Value ind = a.get_or(1, Value(None{}));
  if (ind.is_int()) {
    check_string_size(size_t(std::clamp<int64_t>(ind.as_int(), 0, INT64_MAX)), "tojson's indent");
    o.indent = std::string(std::max<int64_t>(0, ind.as_int()), ' ');
  }
  else if (ind.is_string()) o.indent = ind.str_ref();
  else if (!ind.is_none()) ev.fail(pos, fmt::format("tojson indent must be an int or a string, not '{}'", ind.type_name()));
  const Value sep = a.get_or(2, Value(None{}));
  if (sep.is_list() && sep.list().size() == 2 && sep.list()[0].is_string() && sep.list()[1].is_string())
    o.separators = std::make_pair(sep.list()[0].str_ref(), sep.list()[1].str_ref());
  else if (!sep.is_none()) ev.fail(pos, "tojson separators must be a pair of strings");
  o.sort_keys = a.get_or(3, Value(false)).truthy();
  std::string bad;
  std::optional<std::string> out = to_json(v, o, &bad);
  if (!out) ev.fail(pos, fmt::format("Object of type {} is not JSON serializable", bad));
  return Value(std::move(*out));
}

Value sort_items(Evaluator& ev, const Value& seq, const CallArgs& args, SourcePos pos) {
  Args a(ev, "sort", args, {"reverse", "case_sensitive", "attribute"}, pos);
  const bool reverse = a.get_or(0, Value(false)).truthy(), case_sensitive = a.get_or(1, Value(false)).truthy();
  const Value attr = a.get_or(2, Value(None{}));
  List items = as_items(ev, seq, pos);
  auto key = [&](const Value& v) {
    Value k = attr.is_none() ? v : attr_path(ev, v, attr.str(), pos);
    return (!case_sensitive && k.is_string()) ? Value(ascii_lower(k.str_ref())) : k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    const Value kx = key(x), ky = key(y);
    const std::optional<bool> lt = reverse ? less(ky, kx) : less(kx, ky);
    if (!lt) ev.fail(pos, fmt::format("sort: '<' not supported between '{}' and '{}'", kx.type_name(), ky.type_name()));
    return *lt;
  });
  return Value(std::move(items));
}

}  // namespace

Value apply_filter(Evaluator& ev, const std::string& name, const Value& v, const CallArgs& args, SourcePos pos) {
  ev.charge_scan(v, args);
  auto no_args = [&]() {
    if (!args.pos.empty() || !args.kw.empty()) ev.fail(pos, fmt::format("filter '{}' takes no arguments", name));
  };
  if (name == "trim") {
    Args a(ev, name, args, {"chars"}, pos);
    const Value chars = a.get_or(0, Value(None{}));
    return Value(py_strip_chars(v.str(), chars.is_none() ? std::nullopt : std::optional(chars.str()), true, true));
  }
  if (name == "tojson") return filter_tojson(ev, v, args, pos);
  if (name == "length" || name == "count") return no_args(), Value(length_of(ev, v, pos));
  if (name == "upper") return no_args(), Value(ascii_upper(v.str()));
  if (name == "lower") return no_args(), Value(ascii_lower(v.str()));
  if (name == "capitalize") return no_args(), Value(capitalize(v.str()));
  if (name == "title") return no_args(), Value(jinja_title(v.str()));
  if (name == "string") return no_args(), Value(v.str());
  if (name == "safe") return no_args(), v;
  if (name == "e" || name == "escape" || name == "forceescape") return no_args(), Value(html_escape(v.str()));
  if (name == "default" || name == "d") {
    Args a(ev, name, args, {"default_value", "boolean"}, pos);
    const bool boolean = a.get_or(1, Value(false)).truthy();
    if (v.is_undefined() || (boolean && !v.truthy())) return a.get_or(0, Value(""));
    return v;
  }
  if (name == "items") {
    no_args();
    if (v.is_undefined()) return Value(List{});
    if (!v.is_dict()) ev.fail(pos, fmt::format("items filter expects a mapping, got '{}'", v.type_name()));
    List out;
    for (const auto& [k, x] : v.dict()) out.push_back(Value::make_tuple(List{Value(k), x}));
    return Value(std::move(out));
  }
  if (name == "list") return no_args(), Value(as_items(ev, v, pos));
  if (name == "join") {
    Args a(ev, name, args, {"d", "attribute"}, pos);
    const std::string sep = a.get_or(0, Value("")).str();
    const Value attr = a.get_or(1, Value(None{}));
    std::string out;
    bool first = true;
    for (const Value& item : as_items(ev, v, pos)) {
      out += (first ? "" : sep) + (attr.is_none() ? item : attr_path(ev, item, attr.str(), pos)).str();
      first = false;
      check_string_size(out.size(), "join's result");
    }
    return Value(std::move(out));
  }
  if (name == "replace") {
    Args a(ev, name, args, {"old", "new", "count"}, pos);
    if (!a.get(0) || !a.get(1)) ev.fail(pos, "replace() needs old and new");
    const Value count = a.get_or(2, Value(None{}));
    return Value(py_replace(v.str(), a.get(0)->str(), a.get(1)->str(), count.is_none() ? -1 : count.as_int()));
  }
  if (name == "first" || name == "last") {
    no_args();
    if (v.is_list()) {
      if (v.list().empty()) return Value(Undefined{"first item of an empty list"});
      return name == "first" ? v.list().front() : v.list().back();
    }
    const List items = as_items(ev, v, pos);
    if (items.empty()) return Value(Undefined{"item of an empty sequence"});
    return name == "first" ? items.front() : items.back();
  }
  if (name == "selectattr" || name == "rejectattr") return filter_items(ev, v, args, true, name == "selectattr", pos);
  if (name == "select" || name == "reject") return filter_items(ev, v, args, false, name == "select", pos);
  if (name == "map") return filter_map(ev, v, args, pos);
  if (name == "int") {
    Args a(ev, name, args, {"default", "base"}, pos);
    const Value dflt = a.get_or(0, Value(0));
    if (v.is_int() || v.is_bool()) return Value(v.as_int());
    if (v.is_float()) return std::isfinite(v.as_double()) ? Value(static_cast<int64_t>(v.as_double())) : dflt;
    if (v.is_string()) {
      if (auto i = parse_int(v.str_ref(), static_cast<int>(a.get_or(1, Value(10)).as_int()))) return Value(*i);
      if (auto f = parse_float(v.str_ref()); f && std::isfinite(*f)) return Value(static_cast<int64_t>(*f));
    }
    return dflt;
  }
  if (name == "float") {
    Args a(ev, name, args, {"default"}, pos);
    if (v.is_number()) return Value(v.as_double());
    if (v.is_string())
      if (auto f = parse_float(v.str_ref())) return Value(*f);
    return a.get_or(0, Value(0.0));
  }
  if (name == "abs") {
    no_args();
    if (v.is_float()) return Value(std::fabs(v.as_double()));
    if (v.is_number()) return Value(static_cast<int64_t>(std::llabs(v.as_int())));
    ev.fail(pos, fmt::format("bad operand type for abs(): '{}'", v.type_name()));
  }
  if (name == "reverse") {
    no_args();
    if (v.is_string()) {
      std::vector<std::string> cps = code_points(v.str_ref());
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
      return Value(std::move(out));
    }
    List items = as_items(ev, v, pos);
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "sort") return sort_items(ev, v, args, pos);
  if (name == "unique") {
    Args a(ev, name, args, {"case_sensitive", "attribute"}, pos);
    const bool cs = a.get_or(0, Value(false)).truthy();
    const Value attr = a.get_or(1, Value(None{}));
    List out, seen;
    for (const Value& item : as_items(ev, v, pos)) {
      Value k = attr.is_none() ? item : attr_path(ev, item, attr.str(), pos);
      if (!cs && k.is_string()) k = Value(ascii_lower(k.str_ref()));
      if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, k); }))
        seen.push_back(k), out.push_back(item);
    }
    return Value(std::move(out));
  }
  if (name == "indent") {
    Args a(ev, name, args, {"width", "first", "blank"}, pos);
    const Value w = a.get_or(0, Value(4));
    if (!w.is_string()) check_string_size(size_t(std::max<int64_t>(0, w.as_int())), "indent's width");
    const std::string prefix = w.is_string() ? w.str_ref() : std::string(std::max<int64_t>(0, w.as_int()), ' ');
    const std::string text = v.str();
    check_string_size(text.size() + prefix.size() * size_t(std::count(text.begin(), text.end(), '\n')), "indent's result");
    return Value(jinja_indent(text, prefix, a.get_or(1, Value(false)).truthy(), a.get_or(2, Value(false)).truthy()));
  }
  ev.fail(pos, fmt::format("unknown filter '{}'", name));
}

bool apply_test(Evaluator& ev, const std::string& name, const Value& v, const CallArgs& args, SourcePos pos) {
  ev.charge_scan(v, args);
  auto arg = [&]() -> const Value& {
    if (args.pos.size() != 1 || !args.kw.empty()) ev.fail(pos, fmt::format("test '{}' takes one argument", name));
    return args.pos[0];
  };
  auto order = [&](const Value& a, const Value& b) {
    const std::optional<bool> lt = less(a, b);
    if (!lt) ev.fail(pos, fmt::format("'{}' not supported between '{}' and '{}'", name, a.type_name(), b.type_name()));
    return *lt;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && std::get<bool>(v.data);
  if (name == "false") return v.is_bool() && !std::get<bool>(v.data);
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "sequence") return v.is_string() || v.is_list() || v.is_dict();
  if (name == "callable") return v.is_function();
  if (name == "sameas") {
    const Value& o = arg();
    if (v.is_none() || v.is_bool() || o.is_none() || o.is_bool()) return v.data.index() == o.data.index() && equal(v, o);
    return false;  // identity of other objects is not modelled
  }
  if (name == "eq" || name == "equalto" || name == "==") return equal(v, arg());
  if (name == "ne" || name == "!=") return !equal(v, arg());
  if (name == "lt" || name == "lessthan" || name == "<") return order(v, arg());
  if (name == "gt" || name == "greaterthan" || name == ">") return order(arg(), v);
  if (name == "le" || name == "<=") return !order(arg(), v);
  if (name == "ge" || name == ">=") return !order(v, arg());
  if (name == "in") {
    const Value& c = arg();
    if (c.is_string()) return v.is_string() && c.str_ref().find(v.str_ref()) != std::string::npos;
    for (const Value& x : as_items(ev, c, pos))
      if (equal(x, v)) return true;
    return false;
  }
  if (name == "odd" || name == "even") {
    if (!v.is_number() || v.is_float()) ev.fail(pos, fmt::format("test '{}' needs an integer", name));
    return (v.as_int() % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    const Value& d = arg();
    if (!v.is_number() || !d.is_number() || d.as_double() == 0) ev.fail(pos, "divisibleby needs non-zero numbers");
    return std::fmod(v.as_double(), d.as_double()) == 0;
  }
  if (name == "lower") return v.str() == ascii_lower(v.str());
  if (name == "upper") return v.str() == ascii_upper(v.str());
  ev.fail(pos, fmt::format("unknown test '{}'", name));
}

std::optional<Value> call_method(Evaluator& ev, const Value& obj, const std::string& name, const CallArgs& args,
                                 SourcePos pos) {
  ev.charge_scan(obj, args);
  if (obj.is_string()) {
    const std::string& s = obj.str_ref();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      Args a(ev, name, args, {"chars"}, pos);
      const Value chars = a.get_or(0, Value(None{}));
      return Value(py_strip_chars(s, chars.is_none() ? std::nullopt : std::optional(chars.str()), name != "rstrip",
                                  name != "lstrip"));
    }
    if (name == "split") {
      Args a(ev, name, args, {"sep", "maxsplit"}, pos);
      const Value sep = a.get_or(0, Value(None{}));
      if (sep.is_string() && sep.str_ref().empty()) ev.fail(pos, "split(): empty separator");
      List out;
      for (std::string& part : py_split(s, sep.is_none() ? std::nullopt : std::optional(sep.str()), a.get_or(1, Value(-1)).as_int()))
        out.emplace_back(std::move(part));
      return Value(std::move(out));
    }
    if (name == "startswith" || name == "endswith") {
      Args a(ev, name, args, {"prefix"}, pos);
      if (!a.get(0)) ev.fail(pos, fmt::format("{}() takes one argument", name));
      List options = a.get(0)->is_list() ? a.get(0)->list() : List{*a.get(0)};
      for (const Value& o : options) {
        if (!o.is_string()) ev.fail(pos, fmt::format("{}() argument must be str, not '{}'", name, o.type_name()));
        if (name == "startswith" ? s.starts_with(o.str_ref()) : s.ends_with(o.str_ref())) return Value(true);
      }
      return Value(false);
    }
    if (name == "upper") return Value(ascii_upper(s));
    if (name == "lower") return Value(ascii_lower(s));
    if (name == "title") return Value(py_title(s));
    if (name == "capitalize") return Value(capitalize(s));
    if (name == "replace") {
      Args a(ev, name, args, {"old", "new", "count"}, pos);
      if (!a.get(0) || !a.get(1)) ev.fail(pos, "replace() needs old and new");
      return Value(py_replace(s, a.get(0)->str(), a.get(1)->str(), a.get_or(2, Value(-1)).as_int()));
    }
    if (name == "find" || name == "count") {
      Args a(ev, name, args, {"sub"}, pos);
      if (!a.get(0) || !a.get(0)->is_string()) ev.fail(pos, fmt::format("{}() needs a string", name));
      const std::string& sub = a.get(0)->str_ref();
      if (name == "find") {
        const size_t hit = s.find(sub);
        return Value(hit == std::string::npos ? int64_t{-1} : static_cast<int64_t>(code_point_count(s.substr(0, hit))));
      }
      if (sub.empty()) return Value(static_cast<int64_t>(code_point_count(s)) + 1);
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value(n);
    }
    if (name == "join") {
      Args a(ev, name, args, {"iterable"}, pos);
      if (!a.get(0)) ev.fail(pos, "join() takes one argument");
      std::string out;
      bool first = true;
      for (const Value& item : as_items(ev, *a.get(0), pos)) {
        if (!item.is_string()) ev.fail(pos, fmt::format("join(): expected str items, found '{}'", item.type_name()));
        out += (first ? "" : s) + item.str_ref();
        first = false;
        check_string_size(out.size(), "join's result");
      }
      return Value(std::move(out));
    }
    if (name == "splitlines") {
      List out;
      size_t b = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\n' && s[i] != '\r') continue;
        out.emplace_back(s.substr(b, i - b));
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        b = i + 1;
      }
      if (b < s.size()) out.emplace_back(s.substr(b));
      return Value(std::move(out));
    }
    if (name == "isdigit" || name == "isalpha" || name == "isspace") {
      if (s.empty()) return Value(false);
      for (char c : s) {
        const bool ok = name == "isdigit" ? (c >= '0' && c <= '9') : name == "isalpha" ? is_ascii_alpha(c)
                                                                     : utf8::is_py_space(static_cast<unsigned char>(c));
        if (!ok) return Value(false);
      }
      return Value(true);
    }
    return std::nullopt;
  }
  if (obj.is_dict()) {
    const Dict& d = obj.dict();
    if (name == "items" || name == "keys" || name == "values") {
      Args a(ev, name, args, {}, pos);
      List out;
      for (const auto& [k, v] : d)
        out.push_back(name == "items" ? Value::make_tuple(List{Value(k), v}) : name == "keys" ? Value(k) : v);
      return Value(std::move(out));
    }
    if (name == "get") {
      Args a(ev, name, args, {"key", "default"}, pos);
      if (!a.get(0)) ev.fail(pos, "get() needs a key");
      const Value* v = a.get(0)->is_string() ? d.find(a.get(0)->str_ref()) : nullptr;
      return v ? *v : a.get_or(1, Value(None{}));
    }
    return std::nullopt;
  }
  return std::nullopt;
}

Dict make_globals() {
  Dict g;
  auto def = [&](const char* name, auto fn) {
    g.set(name, Value(FunctionPtr(std::make_shared<const Function>(Function{name, fn}))));
  };
  def("range", [](Evaluator& ev, const CallArgs& args, SourcePos pos) {
    if (!args.kw.empty() || args.pos.empty() || args.pos.size() > 3) ev.fail(pos, "range() takes 1 to 3 integers");
    for (const Value& v : args.pos)
      if (!v.is_int() && !v.is_bool()) ev.fail(pos, fmt::format("range() takes integers, not '{}'", v.type_name()));
    int64_t start = 0, stop, step = 1;
    if (args.pos.size() == 1) stop = args.pos[0].as_int();
    else start = args.pos[0].as_int(), stop = args.pos[1].as_int();
    if (args.pos.size() == 3) step = args.pos[2].as_int();
    if (step == 0) ev.fail(pos, "range() step must not be zero");
    // In 128 bits: stop - start and the rounding overflow int64 for far-apart bounds.
    const __int128 a = start, z = stop, s = step;
    const __int128 n128 = s > 0 ? (z > a ? (z - a + s - 1) / s : 0) : (a > z ? (a - z - s - 1) / -s : 0);
    if (n128 > kMaxRange)
      ev.fail(pos, fmt::format("range() of {} items is more than the {} allowed",
                               n128 > INT64_MAX ? std::string("more than 2^63") : std::to_string(int64_t(n128)), kMaxRange));
    const int64_t n = static_cast<int64_t>(n128);
    List out;
    for (int64_t i = 0; i < n; ++i) out.emplace_back(start + i * step);
    return Value(std::move(out));
  });
  def("namespace", [](Evaluator& ev, const CallArgs& args, SourcePos pos) {
    auto ns = std::make_shared<Namespace>();
    for (const Value& v : args.pos) {
      if (!v.is_dict()) ev.fail(pos, "namespace() takes a mapping or keyword arguments");
      for (const auto& [k, x] : v.dict()) ns->attrs.set(k, x);
    }
    for (const auto& [k, v] : args.kw) ns->attrs.set(k, v);
    for (const auto& [k, v] : ns->attrs)
      if (v.holds_namespace) ev.fail(pos, fmt::format("namespace(): '{}' is a namespace, which a namespace cannot hold", k));
    return Value(NamespacePtr(ns));
  });
  def("dict", [](Evaluator& ev, const CallArgs& args, SourcePos pos) {
    Dict d;
    for (const Value& v : args.pos) {
      if (!v.is_dict()) ev.fail(pos, "dict() takes a mapping or keyword arguments");
      for (const auto& [k, x] : v.dict()) d.set(k, x);
    }
    for (const auto& [k, v] : args.kw) d.set(k, v);
    return Value(std::move(d));
  });
  def("raise_exception", [](Evaluator& ev, const CallArgs& args, SourcePos pos) -> Value {
    ev.fail(pos, "raise_exception: " + (args.pos.empty() ? std::string() : args.pos[0].str()));
  });
  def("strftime_now", [](Evaluator& ev, const CallArgs& args, SourcePos pos) {
    if (args.pos.size() != 1 || !args.pos[0].is_string()) ev.fail(pos, "strftime_now() takes one format string");
    const std::time_t now = ev.options().now.value_or(std::time(nullptr));
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[512];
    const size_t n = std::strftime(buf, sizeof(buf), args.pos[0].str_ref().c_str(), &tm);
    return Value(std::string(buf, n));
  });
  return g;
}

}  // namespace sft::jinja
