// Jinja evaluator: renders a parsed template against a context of values, with Jinja2's scoping
// (a for loop or macro body is its own scope; `namespace()` is how a loop writes outside it),
// default Undefined semantics (prints as "", is falsy, iterates as empty; attribute access on it
// is an error), the loop-controls extension (break/continue) and HF's {% generation %} spans.
// Template is the public entry point. Reference: Jinja2 template designer docs; HF
// transformers utils/chat_template_utils.py (_compile_jinja_template: the environment HF uses).
#pragma once
#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/jinja_parser.h"
#include "data/jinja_value.h"

namespace sft::jinja {

struct RenderOptions {
  std::optional<std::time_t> now;  // the time strftime_now() formats (local time); default: now
};

struct RenderResult {
  std::string text;
  // [begin, end) byte ranges of `text` rendered inside {% generation %} blocks, in order.
  std::vector<std::pair<size_t, size_t>> generation_spans;
  uint64_t work = 0;        // the work the render took (WorkMeter units) ...
  uint64_t work_limit = 0;  // ... and its budget
};

// Bounds on one render (templates are untrusted input).
constexpr int64_t kMaxSteps = 10'000'000;         // loop iterations + macro calls
constexpr size_t kMaxOutputBytes = size_t(64) << 20;
constexpr int kMaxCallDepth = 64;                 // nested macro calls
constexpr int64_t kMaxRange = 100'000;            // range() length, as Jinja's sandbox
constexpr size_t kMaxListItems = 1'000'000;       // a list built with +
// The work budget of one render (WorkMeter, jinja_value.h), in units of about a byte written or
// compared (1-2 G units/s here): kWorkBase plus kWorkPerContextByte per byte of the context's
// strings, as a real template's work grows with the conversation (the most seen: Llama 3.2
// Vision's loops over every character of a string content, 1,374 units per byte). A loop
// iteration or call costs kStepWork besides the values it builds (its `loop` object is a dict of
// 12). The real templates of tests/data/fixtures use under 1% of it on ordinary conversations
// (tests/data/test_jinja_budget.cpp); a runaway template over one ends in well under a second.
constexpr uint64_t kWorkBase = uint64_t(256) << 20;
constexpr uint64_t kWorkPerContextByte = 4096;
constexpr uint64_t kStepWork = 64;

// A compiled template: parse once, render many times (render is const and thread-safe).
class Template {
 public:
  // Parses `source`; a syntax error or unsupported construct throws sft::Error naming `name`,
  // line and column. Whitespace rules are HF's: trim_blocks and lstrip_blocks on.
  explicit Template(std::string_view source, std::string name = "chat_template");

  // Renders with `context` as the template's variables (messages, add_generation_prompt, ...).
  // Runtime errors (raise_exception, type errors, undefined attributes) throw sft::Error.
  RenderResult render(const Dict& context, const RenderOptions& opts = {}) const;

  const std::string& name() const { return program_->name; }

 private:
  std::shared_ptr<const Program> program_;
};

// The tree walker; exposed for the builtins (filters, tests, globals) that call back into it.
class Evaluator {
 public:
  Evaluator(const Program& program, const Dict& context, const RenderOptions& opts);
  RenderResult run();

  [[noreturn]] void fail(SourcePos pos, const std::string& message) const;
  // Calls a function value (a macro or a global) with evaluated arguments.
  Value call(const Value& callee, const CallArgs& args, SourcePos pos);
  // obj.name as Jinja resolves it (item lookup for dicts); undefined when absent.
  Value get_attr(const Value& obj, const std::string& name, SourcePos pos);
  // Counts one loop iteration or call against kMaxSteps, and kStepWork against the work budget.
  void step(SourcePos pos);
  // A builtin may walk the lists and dicts it is given (join, sort, sum, select, ...): their
  // items are charged against the work budget before it runs (pass Value() for no input).
  void charge_scan(const Value& input, const CallArgs& args);
  const RenderOptions& options() const { return opts_; }

 private:
  enum class Flow { normal, break_loop, continue_loop };
  struct Frame {
    Dict vars;
    // How many frames below this one its lookups see: all of them for a block's frame; for a
    // macro's, those that were visible where the macro (or the call block) was written.
    size_t visible_below = SIZE_MAX;
  };

  Flow exec_body(const Body& body);
  Flow exec(const Stmt& s);
  void exec_for(const Stmt& s);
  void exec_call_block(const Stmt& s);
  // A macro's (or call block's) body in a frame of its parameters that sees the first
  // `visible` frames: those in scope where it was written (lexical scoping, as Jinja2).
  Value call_macro(const Stmt& macro, const CallArgs& args, SourcePos pos, size_t visible);
  std::string render_body(const Body& body);

  Value eval(const Expr& e);
  Value eval_binary(const Expr& e);
  Value eval_compare(const Expr& e);
  Value eval_call(const Expr& e);
  CallArgs eval_args(const Expr& e);
  Value get_item(const Value& obj, const Value& key, SourcePos pos);
  Value slice(const Value& obj, const Expr& e);

  Value lookup(const std::string& name) const;
  void assign(const Target& t, Value v, SourcePos pos);
  void write(std::string_view text, SourcePos pos);

  const Program& program_;
  const Dict& context_;
  const RenderOptions& opts_;
  const Dict& globals_;
  std::vector<Frame> frames_;
  std::string output_;
  std::string* out_ = &output_;
  std::vector<std::pair<size_t, size_t>> generation_spans_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
  WorkMeter meter_;
};

}  // namespace sft::jinja
