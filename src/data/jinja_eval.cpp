// The tree walker: statements write into the current output buffer (a macro or block set
// renders into its own), expressions return Values. Lookups go innermost frame first (a macro's
// frame continues with the frames in scope where the macro was written), then the render
// context, then the globals.
// Each loop iteration gets a fresh frame, so a `set` in a loop body lasts one iteration (Jinja2).
// Reference: Jinja2 template designer docs ("Assignments", "Scoping Behavior", "Macros").
#include "data/jinja_eval.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <fmt/format.h>

#include "core/check.h"
#include "data/jinja_builtins.h"
#include "tokenizer/utf8.h"

namespace sft::jinja {

Template::Template(std::string_view source, std::string name)
    : program_(std::make_shared<const Program>(parse(source, std::move(name)))) {}

RenderResult Template::render(const Dict& context, const RenderOptions& opts) const {
  return Evaluator(*program_, context, opts).run();
}

namespace {

// The globals hold no state (strftime_now reads the evaluator's options): built once.
const Dict& shared_globals() {
  static const Dict globals = make_globals();
  return globals;
}

}  // namespace

Evaluator::Evaluator(const Program& program, const Dict& context, const RenderOptions& opts)
    : program_(program), context_(context), opts_(opts), globals_(shared_globals()) {
  frames_.emplace_back();
  uint64_t context_bytes = 0;
  for (const auto& [k, v] : context_) context_bytes += k.size() + v.bytes;
  meter_.limit = kWorkBase + kWorkPerContextByte * context_bytes;
  meter_.template_name = program_.name;
  meter_.limit_note = fmt::format("{} MiB + {} per byte of the context's {} bytes of strings", kWorkBase >> 20,
                                  kWorkPerContextByte, context_bytes);
}

RenderResult Evaluator::run() {
  // This thread's meter for the render (restored however it ends: renders may nest in a builtin).
  struct Install {
    WorkMeter* saved;
    explicit Install(WorkMeter* m) : saved(WorkMeter::current) { WorkMeter::current = m; }
    ~Install() { WorkMeter::current = saved; }
  } install(&meter_);
  exec_body(program_.body);
  return RenderResult{std::move(output_), std::move(generation_spans_), meter_.used, meter_.limit};
}

void Evaluator::fail(SourcePos pos, const std::string& message) const { fail_at(program_.name, pos, message); }

void Evaluator::step(SourcePos pos) {
  if (++steps_ > kMaxSteps) fail(pos, fmt::format("template ran more than {} loop iterations and calls", kMaxSteps));
  meter_.pos = pos;
  charge_work(kStepWork);
}

void Evaluator::write(std::string_view text, SourcePos pos) {
  if (out_->size() + text.size() > kMaxOutputBytes)
    fail(pos, fmt::format("template output exceeds {} bytes", kMaxOutputBytes));
  meter_.pos = pos;
  charge_work(text.size());
  out_->append(text);
}

void Evaluator::charge_scan(const Value& input, const CallArgs& args) {
  auto items = [](const Value& v) -> uint64_t { return v.is_list() ? v.list().size() : v.is_dict() ? v.dict().size() : 0; };
  uint64_t n = items(input);
  for (const Value& v : args.pos) n += items(v);
  for (const auto& [k, v] : args.kw) n += items(v);
  charge_work(n);
}

// ---- statements ----

Evaluator::Flow Evaluator::exec_body(const Body& body) {
  for (const StmtPtr& s : body) {
    const Flow f = exec(*s);
    if (f != Flow::normal) return f;
  }
  return Flow::normal;
}

Evaluator::Flow Evaluator::exec(const Stmt& s) {
  meter_.pos = s.pos;
  switch (s.kind) {
    case StmtKind::text: write(s.text, s.pos); break;
    case StmtKind::output: write(eval(*s.expr).str(), s.pos); break;
    case StmtKind::if_:
      for (const auto& [cond, body] : s.branches)
        if (eval(*cond).truthy()) return exec_body(body);
      return exec_body(s.else_body);
    case StmtKind::for_: exec_for(s); break;
    case StmtKind::set: assign(s.target, eval(*s.expr), s.pos); break;
    case StmtKind::set_block: {
      Value v(render_body(s.body));
      for (const ExprPtr& f : s.filters) v = apply_filter(*this, f->name, v, eval_args(*f), f->pos);
      assign(s.target, std::move(v), s.pos);
      break;
    }
    case StmtKind::filter_block: {
      Value v(render_body(s.body));
      for (const ExprPtr& f : s.filters) v = apply_filter(*this, f->name, v, eval_args(*f), f->pos);
      write(v.str(), s.pos);
      break;
    }
    case StmtKind::macro: {
      const Stmt* macro = &s;
      const size_t visible = frames_.size();
      auto fn = std::make_shared<const Function>(
          Function{s.name, [macro, visible](Evaluator& ev, const CallArgs& args, SourcePos pos) {
                     return ev.call_macro(*macro, args, pos, visible);
                   }});
      frames_.back().vars.set(s.name, Value(FunctionPtr(fn)));
      break;
    }
    case StmtKind::call_block: exec_call_block(s); break;
    case StmtKind::break_: return Flow::break_loop;
    case StmtKind::continue_: return Flow::continue_loop;
    case StmtKind::generation: {
      const bool top = out_ == &output_;
      const size_t begin = out_->size();
      const Flow f = exec_body(s.body);
      if (top) generation_spans_.emplace_back(begin, out_->size());
      return f;
    }
  }
  return Flow::normal;
}

namespace {

// The items a for loop walks: list items, dict keys, string characters; undefined is empty.
List iteration_items(const Evaluator& ev, const Value& v, SourcePos pos) {
  if (v.is_list()) return v.list();
  if (v.is_undefined()) return {};
  List out;
  if (v.is_dict()) {
    for (const auto& [k, x] : v.dict()) out.emplace_back(k);
  } else if (v.is_string()) {
    const std::string& s = v.str_ref();
    for (size_t i = 0; i < s.size();) {
      const size_t b = i;
      utf8::next(s, i);
      out.emplace_back(s.substr(b, i - b));
    }
  } else {
    ev.fail(pos, fmt::format("'{}' object is not iterable", v.type_name()));
  }
  return out;
}

}  // namespace

void Evaluator::exec_for(const Stmt& s) {
  List items = iteration_items(*this, eval(*s.expr), s.expr->pos);
  if (s.cond) {  // `for x in xs if cond`: the condition sees the loop variable, not `loop`
    List kept;
    for (const Value& v : items) {
      frames_.emplace_back();
      assign(s.target, v, s.pos);
      if (eval(*s.cond).truthy()) kept.push_back(v);
      frames_.pop_back();
    }
    items = std::move(kept);
  }
  const int64_t n = static_cast<int64_t>(items.size());
  // loop.cycle() reads the current index through a counter shared with this loop.
  auto index = std::make_shared<int64_t>(0);
  const Value cycle(FunctionPtr(std::make_shared<const Function>(
      Function{"loop.cycle", [index](Evaluator& ev, const CallArgs& args, SourcePos pos) {
                 if (args.pos.empty()) ev.fail(pos, "loop.cycle() needs at least one value");
                 return args.pos[*index % static_cast<int64_t>(args.pos.size())];
               }})));
  for (int64_t i = 0; i < n; ++i) {
    // Each iteration is a fresh scope: a `set` in the body lasts until the iteration ends.
    step(s.pos);
    frames_.emplace_back();
    assign(s.target, items[i], s.pos);
    *index = i;
    Dict loop;
    loop.reserve(12);
    loop.append("index", Value(i + 1));
    loop.append("index0", Value(i));
    loop.append("revindex", Value(n - i));
    loop.append("revindex0", Value(n - i - 1));
    loop.append("first", Value(i == 0));
    loop.append("last", Value(i == n - 1));
    loop.append("length", Value(n));
    loop.append("depth", Value(1));
    loop.append("depth0", Value(0));
    if (i > 0) loop.append("previtem", items[i - 1]);
    if (i + 1 < n) loop.append("nextitem", items[i + 1]);
    loop.append("cycle", cycle);
    frames_.back().vars.set("loop", Value(std::move(loop)));
    const Flow flow = exec_body(s.body);
    frames_.pop_back();
    if (flow == Flow::break_loop) break;
  }
  if (n == 0) {
    frames_.emplace_back();
    exec_body(s.else_body);
    frames_.pop_back();
  }
}

std::string Evaluator::render_body(const Body& body) {
  std::string buf;
  std::string* saved = out_;
  out_ = &buf;
  exec_body(body);
  out_ = saved;
  return buf;
}

Value Evaluator::call_macro(const Stmt& m, const CallArgs& args, SourcePos pos, size_t visible) {
  if (++call_depth_ > kMaxCallDepth) fail(pos, fmt::format("macro calls nested deeper than {}", kMaxCallDepth));
  step(pos);
  // Both arms string_view: with "caller" : m.name the result was a temporary std::string, freed
  // before the error messages below read it (found by fuzz_jinja under ASan).
  const std::string_view name = m.kind == StmtKind::call_block ? std::string_view("caller") : std::string_view(m.name);
  Frame f;
  f.visible_below = std::min(visible, frames_.size());
  if (args.pos.size() > m.params.size())
    fail(pos, fmt::format("macro '{}' takes {} arguments, {} given", name, m.params.size(), args.pos.size()));
  for (size_t i = 0; i < m.params.size(); ++i) {
    const Param& p = m.params[i];
    if (i < args.pos.size()) f.vars.set(p.name, args.pos[i]);
    else if (p.default_value) f.vars.set(p.name, eval(*p.default_value));
    else f.vars.set(p.name, Value(Undefined{p.name}));
  }
  for (const auto& [k, v] : args.kw) {
    bool known = k == "caller";
    for (size_t i = 0; i < m.params.size(); ++i)
      if (m.params[i].name == k) {
        if (i < args.pos.size()) fail(pos, fmt::format("macro '{}' got argument '{}' twice", name, k));
        known = true;
      }
    if (!known) fail(pos, fmt::format("macro '{}' has no parameter '{}'", name, k));
    f.vars.set(k, v);
  }
  frames_.push_back(std::move(f));
  std::string text = render_body(m.body);
  frames_.pop_back();
  --call_depth_;
  return Value(std::move(text));
}

// {% call(params) m(args) %}body{% endcall %}: m is called with `caller`, a macro made of the body.
void Evaluator::exec_call_block(const Stmt& s) {
  // caller() renders the body in the scope where the call is written (loop variables included).
  const Stmt* block = &s;
  const size_t visible = frames_.size();
  auto caller = std::make_shared<const Function>(
      Function{"caller", [block, visible](Evaluator& ev, const CallArgs& args, SourcePos pos) {
                 return ev.call_macro(*block, args, pos, visible);
               }});
  CallArgs args = eval_args(*s.expr);
  args.kw.emplace_back("caller", Value(FunctionPtr(caller)));
  write(call(eval(*s.expr->a), args, s.expr->pos).str(), s.pos);
}

// ---- assignment and lookup ----

void Evaluator::assign(const Target& t, Value v, SourcePos pos) {
  if (!t.attr.empty()) {
    const Value obj = lookup(t.names[0]);
    if (!obj.is_namespace())
      fail(pos, fmt::format("cannot set attribute '{}' on '{}': only namespace() objects take attributes", t.attr,
                            t.names[0]));
    if (v.holds_namespace) fail(pos, fmt::format("cannot set {}: a namespace cannot hold a namespace", t.attr));
    obj.ns().attrs.set(t.attr, std::move(v));
    return;
  }
  if (!t.is_tuple) {
    frames_.back().vars.set(t.names[0], std::move(v));
    return;
  }
  const List items = iteration_items(*this, v, pos);
  if (items.size() != t.names.size())
    fail(pos, fmt::format("cannot unpack {} values into {} names", items.size(), t.names.size()));
  for (size_t i = 0; i < items.size(); ++i) frames_.back().vars.set(t.names[i], items[i]);
}

Value Evaluator::lookup(const std::string& name) const {
  for (size_t i = frames_.size(); i > 0;) {
    const Frame& f = frames_[i - 1];
    if (const Value* v = f.vars.find(name)) return *v;
    i = std::min(i - 1, f.visible_below);
  }
  if (const Value* v = context_.find(name)) return *v;
  if (const Value* v = globals_.find(name)) return *v;
  return Value(Undefined{name});
}

// ---- expressions ----

Value Evaluator::eval(const Expr& e) {
  meter_.pos = e.pos;
  switch (e.kind) {
    case ExprKind::literal: return e.value;
    case ExprKind::name: return lookup(e.name);
    case ExprKind::list:
    case ExprKind::tuple: {
      List l;
      uint64_t bytes = 0;  // checked as it grows: each item is a copy
      for (const ExprPtr& x : e.items) {
        l.push_back(eval(*x));
        check_string_size(bytes += l.back().bytes, "the strings of a list");
      }
      return e.kind == ExprKind::tuple ? Value::make_tuple(std::move(l)) : Value(std::move(l));
    }
    case ExprKind::dict: {
      Dict d;
      uint64_t bytes = 0;  // checked as it grows: each value is a copy
      for (size_t i = 0; i < e.items.size(); i += 2) {
        Value k = eval(*e.items[i]);
        if (!k.is_string()) fail(e.items[i]->pos, fmt::format("dict keys must be strings, not '{}'", k.type_name()));
        Value v = eval(*e.items[i + 1]);
        check_string_size(bytes += k.bytes + v.bytes, "the strings of a dict");
        d.set(k.str_ref(), std::move(v));
      }
      return Value(std::move(d));
    }
    case ExprKind::attr: return get_attr(eval(*e.a), e.name, e.pos);
    case ExprKind::item: return get_item(eval(*e.a), eval(*e.b), e.pos);
    case ExprKind::slice: return slice(eval(*e.a), e);
    case ExprKind::call: return eval_call(e);
    case ExprKind::filter: return apply_filter(*this, e.name, eval(*e.a), eval_args(e), e.pos);
    case ExprKind::test: return Value(apply_test(*this, e.name, eval(*e.a), eval_args(e), e.pos) != e.negated);
    case ExprKind::unary: {
      const Value v = eval(*e.a);
      if (e.name == "not") return Value(!v.truthy());
      if (v.is_undefined()) fail(e.pos, fmt::format("'{}' is undefined", std::get<Undefined>(v.data).name));
      if (!v.is_number()) fail(e.pos, fmt::format("bad operand type for unary {}: '{}'", e.name, v.type_name()));
      if (e.name == "+") return v.is_float() ? v : Value(v.as_int());
      return v.is_float() ? Value(-v.as_double()) : Value(-v.as_int());
    }
    case ExprKind::binary: return eval_binary(e);
    case ExprKind::compare: return eval_compare(e);
    case ExprKind::cond:
      if (eval(*e.b).truthy()) return eval(*e.a);
      return e.c ? eval(*e.c) : Value(Undefined{"inline if without else"});
  }
  return Value();
}

CallArgs Evaluator::eval_args(const Expr& e) {
  CallArgs args;
  for (const ExprPtr& x : e.items) args.pos.push_back(eval(*x));
  for (const auto& [k, x] : e.kwargs) args.kw.emplace_back(k, eval(*x));
  return args;
}

Value Evaluator::eval_call(const Expr& e) {
  if (e.a->kind == ExprKind::attr) {  // obj.method(...): Python methods first, as getattr finds them
    const Value obj = eval(*e.a->a);
    if (!obj.is_namespace() && !obj.is_undefined()) {
      const CallArgs args = eval_args(e);
      if (auto r = call_method(*this, obj, e.a->name, args, e.pos)) return *r;
      return call(get_attr(obj, e.a->name, e.a->pos), args, e.pos);
    }
    return call(get_attr(obj, e.a->name, e.a->pos), eval_args(e), e.pos);
  }
  const Value callee = eval(*e.a);
  return call(callee, eval_args(e), e.pos);
}

Value Evaluator::call(const Value& callee, const CallArgs& args, SourcePos pos) {
  if (callee.is_undefined()) fail(pos, fmt::format("'{}' is undefined (called as a function)", std::get<Undefined>(callee.data).name));
  if (!callee.is_function()) fail(pos, fmt::format("'{}' object is not callable", callee.type_name()));
  charge_scan(Value(), args);
  return callee.function().call(*this, args, pos);
}

Value Evaluator::get_attr(const Value& obj, const std::string& name, SourcePos pos) {
  if (obj.is_undefined()) {
    const std::string& what = std::get<Undefined>(obj.data).name;
    fail(pos, fmt::format("'{}' is undefined (reading its attribute '{}')", what, name));
  }
  const Value* v = obj.is_dict() ? obj.dict().find(name) : obj.is_namespace() ? obj.ns().attrs.find(name) : nullptr;
  return v ? *v : Value(Undefined{name});
}

namespace {

// The byte offsets of each code point of `s`, plus s.size() at the end.
std::vector<size_t> char_offsets(const std::string& s) {
  charge_work(sizeof(size_t) * s.size());  // at most one offset per byte, charged before they are held
  std::vector<size_t> off;
  for (size_t i = 0; i < s.size();) off.push_back(i), utf8::next(s, i);
  off.push_back(s.size());
  return off;
}

}  // namespace

Value Evaluator::get_item(const Value& obj, const Value& key, SourcePos pos) {
  if (obj.is_undefined())
    fail(pos, fmt::format("'{}' is undefined (reading item {})", std::get<Undefined>(obj.data).name, key.repr()));
  if (obj.is_dict() || obj.is_namespace()) {
    if (!key.is_string()) return Value(Undefined{key.repr()});
    const Value* v = obj.is_dict() ? obj.dict().find(key.str_ref()) : obj.ns().attrs.find(key.str_ref());
    return v ? *v : Value(Undefined{key.str_ref()});
  }
  if (obj.is_list() || obj.is_string()) {
    if (!key.is_int() && !key.is_bool()) {
      if (key.is_string()) return Value(Undefined{key.str_ref()});  // Jinja: a failed item lookup is undefined
      fail(pos, fmt::format("indices must be integers, not '{}'", key.type_name()));
    }
    int64_t i = key.as_int();
    if (obj.is_list()) {
      const int64_t n = static_cast<int64_t>(obj.list().size());
      if (i < 0) i += n;
      return i >= 0 && i < n ? obj.list()[i] : Value(Undefined{"index " + std::to_string(key.as_int())});
    }
    const std::vector<size_t> off = char_offsets(obj.str_ref());
    const int64_t n = static_cast<int64_t>(off.size()) - 1;
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value(Undefined{"index " + std::to_string(key.as_int())});
    return Value(obj.str_ref().substr(off[i], off[i + 1] - off[i]));
  }
  return Value(Undefined{key.str()});
}

Value Evaluator::slice(const Value& obj, const Expr& e) {
  int64_t bounds[3] = {0, 0, 1};
  bool given[3] = {false, false, false};
  for (int k = 0; k < 3; ++k) {
    if (!e.items[k]) continue;
    const Value v = eval(*e.items[k]);
    if (v.is_none()) continue;
    if (!v.is_int() && !v.is_bool()) fail(e.items[k]->pos, fmt::format("slice indices must be integers, not '{}'", v.type_name()));
    bounds[k] = v.as_int(), given[k] = true;
  }
  const int64_t step = bounds[2];
  if (step == 0) fail(e.pos, "slice step cannot be zero");
  std::vector<size_t> off;
  int64_t n;
  if (obj.is_list()) n = static_cast<int64_t>(obj.list().size());
  else if (obj.is_string()) off = char_offsets(obj.str_ref()), n = static_cast<int64_t>(off.size()) - 1;
  else if (obj.is_undefined()) fail(e.pos, fmt::format("'{}' is undefined (sliced)", std::get<Undefined>(obj.data).name));
  else fail(e.pos, fmt::format("'{}' object is not subscriptable", obj.type_name()));
  // Python's slice.indices(n).
  auto clamp = [&](int64_t v, bool is_given, int64_t dflt) {
    if (!is_given) return dflt;
    if (v < 0) v += n;
    if (step > 0) return std::clamp<int64_t>(v, 0, n);
    return std::clamp<int64_t>(v, -1, n - 1);
  };
  const int64_t start = clamp(bounds[0], given[0], step > 0 ? 0 : n - 1);
  const int64_t stop = clamp(bounds[1], given[1], step > 0 ? n : -1);
  List items;
  std::string s;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (obj.is_list()) items.push_back(obj.list()[i]);
    else s.append(obj.str_ref(), off[i], off[i + 1] - off[i]);
  }
  return obj.is_list() ? Value(std::move(items)) : Value(std::move(s));
}

// ---- operators ----

namespace {

void check_overflow(const Evaluator& ev, bool overflow, SourcePos pos) {
  if (overflow) ev.fail(pos, "integer overflow (values beyond 64 bits are not supported)");
}

double py_mod(double a, double b) {
  const double m = std::fmod(a, b);
  return (m != 0 && ((m < 0) != (b < 0))) ? m + b : m;
}

}  // namespace

Value Evaluator::eval_binary(const Expr& e) {
  const std::string& op = e.name;
  if (op == "and") {
    Value l = eval(*e.a);
    return l.truthy() ? eval(*e.b) : l;
  }
  if (op == "or") {
    Value l = eval(*e.a);
    return l.truthy() ? l : eval(*e.b);
  }
  const Value l = eval(*e.a), r = eval(*e.b);
  if (op == "~") {
    std::string a = l.str(), b = r.str();
    check_string_size(a.size() + b.size(), "the result of ~");
    return Value(std::move(a) + b);
  }
  for (const Value* v : {&l, &r})
    if (v->is_undefined()) fail(e.pos, fmt::format("'{}' is undefined (operand of {})", std::get<Undefined>(v->data).name, op));
  auto type_error = [&]() {
    fail(e.pos, fmt::format("unsupported operand types for {}: '{}' and '{}'", op, l.type_name(), r.type_name()));
  };
  if (op == "+") {
    if (l.is_string() && r.is_string()) {
      check_string_size(l.str_ref().size() + r.str_ref().size(), "the result of +");
      return Value(l.str_ref() + r.str_ref());
    }
    if (l.is_list() && r.is_list()) {
      if (l.list().size() + r.list().size() > kMaxListItems)
        fail(e.pos, fmt::format("the result of + would have more than {} items", kMaxListItems));
      check_string_size(l.bytes + r.bytes, "the strings of the result of +");
      List out = l.list();
      out.insert(out.end(), r.list().begin(), r.list().end());
      return Value(std::move(out));
    }
  }
  if (op == "*" && ((l.is_string() || l.is_list()) != (r.is_string() || r.is_list()))) {
    const Value& seq = l.is_string() || l.is_list() ? l : r;
    const Value& count = &seq == &l ? r : l;
    if (!count.is_int() && !count.is_bool()) type_error();
    const int64_t n = std::max<int64_t>(0, count.as_int());
    if (seq.is_string()) {
      if (n > 0 && seq.str_ref().size() > kMaxOutputBytes / static_cast<size_t>(n))  // no overflow
        fail(e.pos, "string repetition too large");
      std::string out;
      out.reserve(seq.str_ref().size() * static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) out += seq.str_ref();
      return Value(std::move(out));
    }
    if (n > 0 && seq.list().size() > static_cast<size_t>(kMaxRange) / static_cast<size_t>(n))
      fail(e.pos, "list repetition too large");
    if (n > 0 && seq.bytes > kMaxStringBytes / static_cast<size_t>(n))
      fail(e.pos, fmt::format("list repetition would hold more than {} bytes of strings", kMaxStringBytes));
    List out;
    for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.list().begin(), seq.list().end());
    return Value(std::move(out));
  }
  if (!l.is_number() || !r.is_number()) type_error();
  const bool ints = !l.is_float() && !r.is_float();
  if (op == "/") {
    if (r.as_double() == 0) fail(e.pos, "division by zero");
    return Value(l.as_double() / r.as_double());
  }
  if (ints) {
    const int64_t a = l.as_int(), b = r.as_int();
    int64_t res = 0;
    if (op == "+" || op == "-" || op == "*") {
      const bool overflow = op == "+"   ? __builtin_add_overflow(a, b, &res)
                            : op == "-" ? __builtin_sub_overflow(a, b, &res)
                                        : __builtin_mul_overflow(a, b, &res);
      check_overflow(*this, overflow, e.pos);
      return Value(res);
    }
    if (op == "//" || op == "%") {
      if (b == 0) fail(e.pos, "integer division or modulo by zero");
      int64_t q = a / b, m = a % b;
      if (m != 0 && ((m < 0) != (b < 0))) --q, m += b;
      return Value(op == "//" ? q : m);
    }
    if (op == "**") {
      if (b < 0) return Value(std::pow(static_cast<double>(a), static_cast<double>(b)));
      int64_t acc = 1, base = a;  // square-and-multiply
      for (int64_t exp = b; exp > 0;) {
        if (exp & 1) check_overflow(*this, __builtin_mul_overflow(acc, base, &acc), e.pos);
        exp >>= 1;
        if (exp > 0) check_overflow(*this, __builtin_mul_overflow(base, base, &base), e.pos);
      }
      return Value(acc);
    }
  }
  const double a = l.as_double(), b = r.as_double();
  if (op == "+") return Value(a + b);
  if (op == "-") return Value(a - b);
  if (op == "*") return Value(a * b);
  if (op == "**") return Value(std::pow(a, b));
  if (b == 0) fail(e.pos, "float division or modulo by zero");
  if (op == "//") return Value(std::floor(a / b));
  return Value(py_mod(a, b));
}

namespace {

// Python's `item in container`; nullopt when the container type has no membership.
std::optional<bool> contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string()) return std::nullopt;
    return container.str_ref().find(item.str_ref()) != std::string::npos;
  }
  if (container.is_list()) {
    for (const Value& x : container.list())
      if (equal(x, item)) return true;
    return false;
  }
  if (container.is_dict()) return item.is_string() && container.dict().find(item.str_ref()) != nullptr;
  if (container.is_undefined()) return false;
  return std::nullopt;
}

}  // namespace

Value Evaluator::eval_compare(const Expr& e) {
  Value left = eval(*e.a);
  for (size_t i = 0; i < e.ops.size(); ++i) {
    Value right = eval(*e.items[i]);
    const std::string& op = e.ops[i];
    bool ok;
    if (op == "==") ok = equal(left, right);
    else if (op == "!=") ok = !equal(left, right);
    else if (op == "in" || op == "not in") {
      const std::optional<bool> c = contains(right, left);
      if (!c) fail(e.items[i]->pos, fmt::format("'in <{}>' requires a string, list or dict (left operand '{}')",
                                                right.type_name(), left.type_name()));
      ok = *c == (op == "in");
    } else {
      const std::optional<bool> lt = less(left, right), gt = less(right, left);
      if (!lt || !gt)
        fail(e.items[i]->pos, fmt::format("'{}' not supported between '{}' and '{}'", op, left.type_name(), right.type_name()));
      ok = op == "<" ? *lt : op == ">" ? *gt : op == "<=" ? !*gt : !*lt;
    }
    if (!ok) return Value(false);
    left = std::move(right);
  }
  return Value(true);
}

}  // namespace sft::jinja
