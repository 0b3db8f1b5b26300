// Jinja runtime values with Python's semantics: undefined, none, bool, int, float, str, list and
// dict (string keys, insertion order kept, as Python dicts and json.loads), namespace (the one
// mutable object, shared by reference) and callables (macros, globals). Printing follows Python's
// str()/repr(), `tojson` follows json.dumps, equality and ordering follow Python's operators.
// Reference: Jinja2 template designer docs ("Literals", "Comparisons"); Python json.dumps.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/jinja_lexer.h"

namespace sft::jinja {

struct Value;
using List = std::vector<Value>;

// Bounds on the values a template builds (templates are untrusted input): lists and dicts nested
// deeper than kMaxValueNesting (JSON input is held to 512 levels: core/file_util.h), and a string,
// or a list or dict whose strings (keys included) add up to, more than kMaxStringBytes (the bound
// on a render's output, jinja_eval.h), are sft::Errors, so that no recursion over a value
// (printing, comparing, freeing) runs out of stack and no string doubling or list repetition runs
// out of memory (strings are held by value: a list of n copies holds n times the bytes). A
// namespace cannot hold a namespace (it could then hold itself).
constexpr int kMaxValueNesting = 600;
constexpr size_t kMaxStringBytes = size_t(64) << 20;
// sft::Error "[jinja] WHAT would be N bytes, more than ..." when n > kMaxStringBytes.
void check_string_size(size_t n, std::string_view what);

// The work of one render, in units of about a byte written or compared (templates are untrusted
// input: a loop of 10 M steps that each copied a 64 MiB string, well inside the bounds above,
// would run for days). Counted: the bytes of every string a Value is made of or copied from, plus
// kValueWork for the Value; kValueWork per item of every list or dict built (and a dict's key
// bytes); kCompareWork per element and the bytes of two strings compared by equal() and less()
// (`==`, `in`, sort, unique); the output written; per loop iteration and call, what the evaluator
// charges (jinja_eval.h). The meter of the render running on this thread is WorkMeter::current
// (null outside a render: values built for a context are not counted); charge_work() throws the
// sft::Error naming the template and the line being evaluated once `used` passes `limit`.
constexpr uint64_t kValueWork = sizeof(void*) * 8;  // about a Value's own footprint
constexpr uint64_t kCompareWork = 64;       // a recursive call and a type check
struct WorkMeter {
  uint64_t used = 0;
  uint64_t limit = 0;
  std::string_view template_name;
  SourcePos pos;            // where the evaluator is: the statement or expression being evaluated
  std::string limit_note;   // how `limit` was set, for the error
  [[noreturn]] void exceeded() const;
  static inline thread_local WorkMeter* current = nullptr;
};
inline void charge_work(uint64_t units) {
  WorkMeter* m = WorkMeter::current;
  if (m && (m->used += units) > m->limit) m->exceeded();
}

// A string-keyed map that keeps insertion order; lookups are linear (chat data dicts are small).
class Dict {
 public:
  const Value* find(std::string_view key) const;
  // Replaces the value in place when `key` exists (keeping its position), else appends.
  void set(std::string key, Value value);
  // Appends a key known not to be present (JSON objects, the loop object).
  void append(std::string key, Value value);
  // The inline members are defined below Value: clang (with libstdc++) needs Value complete there.
  using Items = std::vector<std::pair<std::string, Value>>;
  void reserve(size_t n);
  size_t size() const;
  bool empty() const;
  Items::const_iterator begin() const;
  Items::const_iterator end() const;

 private:
  Items items_;
};

struct Undefined {
  std::string name;  // what was looked up, for error messages ("'foo' is undefined")
};
struct None {};
struct Namespace {
  Dict attrs;
};

class Evaluator;
struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};
// A global function or a macro. `pos` is where the call is written, for error messages.
struct Function {
  std::string name;
  std::function<Value(Evaluator&, const CallArgs&, SourcePos pos)> call;
};

using ListPtr = std::shared_ptr<const List>;
using DictPtr = std::shared_ptr<const Dict>;
using NamespacePtr = std::shared_ptr<Namespace>;
using FunctionPtr = std::shared_ptr<const Function>;

struct Value {
  std::variant<Undefined, None, bool, int64_t, double, std::string, ListPtr, DictPtr, NamespacePtr, FunctionPtr> data;
  bool tuple = false;  // a list that Python would hold as a tuple: prints as (a, b), never equals a list
  bool holds_namespace = false;  // a namespace, or a list / dict with one inside
  uint16_t depth = 0;            // lists and dicts nested in it (0 for a scalar), <= kMaxValueNesting
  uint64_t bytes = 0;            // its string bytes (dict keys included), <= kMaxStringBytes

  Value() = default;
  // A copy of a string copies its bytes: counted against the render's WorkMeter.
  Value(const Value& o)
      : data(o.data), tuple(o.tuple), holds_namespace(o.holds_namespace), depth(o.depth), bytes(o.bytes) {
    if (is_string()) charge_work(bytes + kValueWork);
  }
  Value(Value&&) noexcept = default;
  Value& operator=(const Value& o) {
    if (this != &o) *this = Value(o);
    return *this;
  }
  Value& operator=(Value&&) noexcept = default;
  ~Value() = default;
  Value(Undefined u) : data(std::move(u)) {}
  Value(None) : data(None{}) {}
  Value(bool b) : data(b) {}
  Value(int64_t i) : data(i) {}
  Value(int i) : data(static_cast<int64_t>(i)) {}
  Value(double f) : data(f) {}
  Value(std::string s) : data(std::move(s)) { set_bytes(); }  // sft::Error past kMaxStringBytes
  Value(const char* s) : data(std::string(s)) { set_bytes(); }
  Value(List l);  // sft::Error past kMaxValueNesting
  Value(Dict d);
  Value(NamespacePtr n) : data(std::move(n)), holds_namespace(true) {}
  Value(FunctionPtr f) : data(std::move(f)) {}

  bool is_undefined() const { return std::holds_alternative<Undefined>(data); }
  bool is_none() const { return std::holds_alternative<None>(data); }
  bool is_bool() const { return std::holds_alternative<bool>(data); }
  bool is_int() const { return std::holds_alternative<int64_t>(data); }
  bool is_float() const { return std::holds_alternative<double>(data); }
  bool is_number() const { return is_bool() || is_int() || is_float(); }  // Python: bool is an int
  bool is_string() const { return std::holds_alternative<std::string>(data); }
  bool is_list() const { return std::holds_alternative<ListPtr>(data); }
  bool is_dict() const { return std::holds_alternative<DictPtr>(data); }
  bool is_namespace() const { return std::holds_alternative<NamespacePtr>(data); }
  bool is_function() const { return std::holds_alternative<FunctionPtr>(data); }

  const std::string& str_ref() const { return std::get<std::string>(data); }
  const List& list() const { return *std::get<ListPtr>(data); }
  const Dict& dict() const { return *std::get<DictPtr>(data); }
  Namespace& ns() const { return *std::get<NamespacePtr>(data); }
  const Function& function() const { return *std::get<FunctionPtr>(data); }
  // bool or int; sft::Error for any other type (a float width, a string count)
  int64_t as_int() const {
    if (is_bool()) return std::get<bool>(data);
    if (!is_int()) not_an_int();
    return std::get<int64_t>(data);
  }
  [[noreturn]] void not_an_int() const;
  double as_double() const { return is_float() ? std::get<double>(data) : static_cast<double>(as_int()); }

  // Python bool(): empty str/list/dict, 0, None and undefined are false.
  bool truthy() const;
  // Python type name: 'str', 'int', 'list', 'dict', 'NoneType', 'Undefined', ...
  std::string type_name() const;
  // Python str() (what {{ }} prints): undefined prints as "", None as "None".
  std::string str() const;
  // Python repr() (how items print inside a printed list or dict).
  std::string repr() const;

  static Value from_json(const nlohmann::ordered_json& j);
  void set_bytes();
  static Value make_tuple(List items) {
    Value v(std::move(items));
    v.tuple = true;
    return v;
  }
};

inline void Dict::reserve(size_t n) { items_.reserve(n); }
inline size_t Dict::size() const { return items_.size(); }
inline bool Dict::empty() const { return items_.empty(); }
inline Dict::Items::const_iterator Dict::begin() const { return items_.begin(); }
inline Dict::Items::const_iterator Dict::end() const { return items_.end(); }

// Python ==: numbers by value (True == 1), str, list and dict by contents; other types differ.
bool equal(const Value& a, const Value& b);
// Python's a < b for numbers, strings (code point order) and lists; nullopt when the types do
// not order (the caller reports the error).
std::optional<bool> less(const Value& a, const Value& b);

// Python float.__repr__ (shortest round-trip digits, "1.0", "1e+16").
std::string float_repr(double f);

struct JsonOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // json.dumps indent: an int n becomes n spaces
  std::optional<std::pair<std::string, std::string>> separators;  // (item, key)
  bool sort_keys = false;
};
// json.dumps(value, ...) as HF's tojson filter calls it; nullopt names the type that is not
// JSON serializable through `bad_type`.
std::optional<std::string> to_json(const Value& v, const JsonOptions& opts, std::string* bad_type);

}  // namespace sft::jinja
