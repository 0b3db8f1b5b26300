// Jinja AST and parser: tokens -> a tree of statements (text, output, if, for, set, macro, call,
// filter, break/continue, HF's generation block) and expressions (literals, names, attribute/item access,
// slices, calls, filters, tests, operators, inline if), with Jinja2's operator precedence.
// Anything outside this subset is a syntax error that names its line and column.
// Reference: Jinja2 template designer docs ("List of Control Structures", "Expressions");
// jinja2/parser.py (3.1) for precedence.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/jinja_lexer.h"
#include "data/jinja_value.h"

namespace sft::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind : uint8_t {
  literal,  // value
  name,     // name
  list,     // items
  tuple,    // items (evaluated as a list)
  dict,     // items: key0, value0, key1, value1, ...
  attr,     // a.name
  item,     // a[b]
  slice,    // a[items[0]:items[1]:items[2]] (null items are omitted bounds)
  call,     // a(items..., kwargs...)
  filter,   // a | name(items..., kwargs...)
  test,     // a is [not] name(items...)
  unary,    // name in {"-", "+", "not"} applied to a
  binary,   // a name b, name in {+ - * / // % ** ~ and or}
  compare,  // a ops[0] items[0] ops[1] items[1] ... (ops: == != < <= > >= in "not in")
  cond,     // a if b else c (c may be null)
};

struct Expr {
  ExprKind kind = ExprKind::literal;
  SourcePos pos;
  Value value;
  std::string name;
  ExprPtr a, b, c;
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;  // `is not`
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// What `for` and `set` assign to: one name, a tuple of names, or `ns.attr` (attr non-empty).
struct Target {
  std::vector<std::string> names;
  bool is_tuple = false;
  std::string attr;
};

struct Param {
  std::string name;
  ExprPtr default_value;  // may be null
};

enum class StmtKind : uint8_t {
  text,        // text
  output,      // {{ expr }}
  if_,         // branches (condition, body), else_body
  for_,        // for target in expr [if cond] : body [else else_body]
  set,         // set target = expr
  set_block,   // set target [| filters in `filters`] : body
  macro,       // macro name(params) : body
  call_block,  // call[(params)] expr : body (the body is the `caller` macro)
  break_,
  continue_,
  generation,  // HF's {% generation %}: body; the rendered span is recorded
  filter_block,  // {% filter f | g %}: body rendered, then passed through `filters`
};

struct Stmt {
  StmtKind kind = StmtKind::text;
  SourcePos pos;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  Target target;
  std::string name;
  std::vector<Param> params;
  std::vector<ExprPtr> filters;  // set_block / filter_block filters: each a filter Expr whose `a` is null
};

// The parsed template. Nesting deeper than kMaxNesting (blocks or expressions) is an error.
struct Program {
  std::string name;  // for error messages, e.g. "chat_template"
  Body body;
};
constexpr int kMaxNesting = 200;

Program parse(std::string_view source, std::string name, LexOptions opts = {});

}  // namespace sft::jinja
