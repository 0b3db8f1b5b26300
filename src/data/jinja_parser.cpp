// Recursive-descent parser over the lexer's tokens. Statements: if/elif/else, for (target
// tuples, `if` filter, else), set (name, tuple, ns.attr, block form with filters), macro, call,
// filter, break, continue, generation. Expressions, lowest precedence first: inline if, or, and, not,
// comparisons (chained, in, not in), + -, ~, * / // %, **, unary - +, then primaries with
// postfix .attr [item] [a:b:c] (call), | filter and `is` test. Reference: jinja2/parser.py (3.1).
#include "data/jinja_parser.h"

#include <fmt/format.h>

namespace sft::jinja {

namespace {

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& name) : toks_(std::move(tokens)), name_(name) {}

  Body parse_template() {
    Body body = parse_body({});
    if (cur().type != TokenType::eof) error(cur().pos, "unexpected end of block");
    return body;
  }

 private:
  // ---- token stream ----
  const Token& cur() const { return toks_[i_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
  Token next() { return toks_[i_ < toks_.size() - 1 ? i_++ : i_]; }
  bool is_op(std::string_view op) const { return cur().type == TokenType::op && cur().text == op; }
  bool is_name(std::string_view n) const { return cur().type == TokenType::name && cur().text == n; }
  bool skip_op(std::string_view op) { return is_op(op) ? (++i_, true) : false; }
  bool skip_name(std::string_view n) { return is_name(n) ? (++i_, true) : false; }

  [[noreturn]] void error(SourcePos pos, const std::string& message) const { fail_at(name_, pos, message); }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case TokenType::text: return "text";
      case TokenType::var_begin: return "'{{'";
      case TokenType::var_end: return "'}}'";
      case TokenType::block_begin: return "'{%'";
      case TokenType::block_end: return "'%}'";
      case TokenType::eof: return "end of template";
      case TokenType::string: return "string literal";
      default: return "'" + t.text + "'";
    }
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) error(cur().pos, fmt::format("expected '{}', found {}", op, describe(cur())));
  }
  void expect_name(std::string_view n) {
    if (!skip_name(n)) error(cur().pos, fmt::format("expected '{}', found {}", n, describe(cur())));
  }
  std::string expect_identifier() {
    if (cur().type != TokenType::name) error(cur().pos, fmt::format("expected a name, found {}", describe(cur())));
    return next().text;
  }
  void expect_block_end() {
    if (cur().type != TokenType::block_end) error(cur().pos, fmt::format("expected '%}}', found {}", describe(cur())));
    ++i_;
  }

  struct DepthGuard {
    Parser& p;
    DepthGuard(Parser& parser, SourcePos pos) : p(parser) {
      if (++p.depth_ > kMaxNesting) p.error(pos, fmt::format("nesting deeper than {} levels", kMaxNesting));
    }
    ~DepthGuard() { --p.depth_; }
  };

  // ---- statements ----

  // Statements until a block tag whose keyword is in `end_names` (left unconsumed: the caller
  // reads the keyword) or the end of the template when `end_names` is empty.
  Body parse_body(std::initializer_list<std::string_view> end_names) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == TokenType::eof) {
        if (end_names.size() == 0) return body;
        std::string want;
        for (auto n : end_names) want += (want.empty() ? "'" : " or '") + std::string(n) + "'";
        error(t.pos, fmt::format("unexpected end of template, expected {}", want));
      }
      if (t.type == TokenType::text) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::text, s->pos = t.pos, s->text = t.text;
        body.push_back(std::move(s));
        ++i_;
      } else if (t.type == TokenType::var_begin) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::output, s->pos = t.pos;
        ++i_;
        s->expr = parse_tuple_expr();
        if (cur().type != TokenType::var_end) error(cur().pos, fmt::format("expected '}}}}', found {}", describe(cur())));
        ++i_;
        body.push_back(std::move(s));
      } else if (t.type == TokenType::block_begin) {
        const Token& kw = peek();
        for (auto n : end_names)
          if (kw.type == TokenType::name && kw.text == n) return body;
        ++i_;
        body.push_back(parse_statement());
      } else {
        error(t.pos, fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  StmtPtr parse_statement() {
    const Token kw = cur();
    DepthGuard guard(*this, kw.pos);
    if (kw.type != TokenType::name) error(kw.pos, fmt::format("expected a statement keyword, found {}", describe(kw)));
    auto s = std::make_unique<Stmt>();
    s->pos = kw.pos;
    ++i_;
    const std::string& k = kw.text;
    if (k == "if") {
      s->kind = StmtKind::if_;
      ExprPtr cond = parse_tuple_expr();
      expect_block_end();
      while (true) {
        Body body = parse_body({"elif", "else", "endif"});
        s->branches.emplace_back(std::move(cond), std::move(body));
        ++i_;  // past '{%'
        const std::string which = next().text;
        if (which == "elif") {
          cond = parse_tuple_expr();
          expect_block_end();
          continue;
        }
        if (which == "else") {
          expect_block_end();
          s->else_body = parse_body({"endif"});
          i_ += 2;
        }
        expect_block_end();
        break;
      }
    } else if (k == "for") {
      s->kind = StmtKind::for_;
      s->target = parse_target(false);
      expect_name("in");
      s->expr = parse_tuple_expr(/*with_cond=*/false);
      if (skip_name("if")) s->cond = parse_expr();
      if (is_name("recursive")) error(cur().pos, "recursive for loops are not supported");
      expect_block_end();
      s->body = parse_body({"endfor", "else"});
      ++i_;
      if (next().text == "else") {
        expect_block_end();
        s->else_body = parse_body({"endfor"});
        i_ += 2;
      }
      expect_block_end();
    } else if (k == "set") {
      s->target = parse_target(true);
      if (skip_op("=")) {
        s->kind = StmtKind::set;
        s->expr = parse_tuple_expr();
        expect_block_end();
      } else {
        s->kind = StmtKind::set_block;
        if (s->target.is_tuple) error(s->pos, "a block set assigns to one name");
        while (is_op("|")) s->filters.push_back(parse_filter(nullptr));
        expect_block_end();
        s->body = parse_body({"endset"});
        i_ += 2;
        expect_block_end();
      }
    } else if (k == "macro") {
      s->kind = StmtKind::macro;
      s->name = expect_identifier();
      s->params = parse_params();
      expect_block_end();
      s->body = parse_body({"endmacro"});
      i_ += 2;
      expect_block_end();
    } else if (k == "call") {
      s->kind = StmtKind::call_block;
      if (is_op("(")) s->params = parse_params();
      s->expr = parse_expr();
      if (s->expr->kind != ExprKind::call) error(s->expr->pos, "{% call %} expects a macro call");
      expect_block_end();
      s->body = parse_body({"endcall"});
      i_ += 2;
      expect_block_end();
    } else if (k == "filter") {
      s->kind = StmtKind::filter_block;
      s->filters.push_back(parse_filter(nullptr, /*leading_pipe=*/false));
      while (is_op("|")) s->filters.push_back(parse_filter(nullptr));
      expect_block_end();
      s->body = parse_body({"endfilter"});
      i_ += 2;
      expect_block_end();
    } else if (k == "break" || k == "continue") {
      s->kind = k == "break" ? StmtKind::break_ : StmtKind::continue_;
      expect_block_end();
    } else if (k == "generation") {
      s->kind = StmtKind::generation;
      expect_block_end();
      s->body = parse_body({"endgeneration"});
      i_ += 2;
      expect_block_end();
    } else {
      error(kw.pos, fmt::format("unsupported statement '{}' (supported: if, for, set, macro, call, filter, break, "
                                "continue, generation)",
                                k));
    }
    return s;
  }

  // `a`, `a, b`, `(a, b)`; with `allow_attr`, also `ns.attr` (set only).
  Target parse_target(bool allow_attr) {
    Target t;
    const bool paren = skip_op("(");
    t.names.push_back(expect_identifier());
    if (allow_attr && !paren && skip_op(".")) {
      t.attr = expect_identifier();
      return t;
    }
    while (skip_op(",")) {
      t.is_tuple = true;
      if (is_name("in") || is_op("=") || is_op(")")) break;
      t.names.push_back(expect_identifier());
    }
    if (paren) expect_op(")"), t.is_tuple = true;
    return t;
  }

  std::vector<Param> parse_params() {
    std::vector<Param> params;
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      Param p;
      p.name = expect_identifier();
      if (skip_op("=")) p.default_value = parse_expr();
      params.push_back(std::move(p));
    }
    expect_op(")");
    return params;
  }

  // ---- expressions ----

  ExprPtr make(ExprKind kind, SourcePos pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind, e->pos = pos;
    return e;
  }

  // An expression or a bare tuple `a, b` (as in {{ a, b }} or set x = a, b).
  ExprPtr parse_tuple_expr(bool with_cond = true) {
    const SourcePos pos = cur().pos;
    ExprPtr first = with_cond ? parse_expr() : parse_or();
    if (!is_op(",")) return first;
    ExprPtr t = make(ExprKind::tuple, pos);
    t->items.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().type == TokenType::block_end || cur().type == TokenType::var_end || is_name("if")) break;
      t->items.push_back(with_cond ? parse_expr() : parse_or());
    }
    return t;
  }

  ExprPtr parse_expr() {
    DepthGuard guard(*this, cur().pos);
    ExprPtr e = parse_or();
    while (is_name("if")) {
      const SourcePos pos = next().pos;
      ExprPtr c = make(ExprKind::cond, pos);
      c->b = parse_or();
      if (skip_name("else")) c->c = parse_expr();
      c->a = std::move(e);
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(std::string op, ExprPtr l, ExprPtr r, SourcePos pos) {
    ExprPtr e = make(ExprKind::binary, pos);
    e->name = std::move(op), e->a = std::move(l), e->b = std::move(r);
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      const SourcePos pos = next().pos;
      e = binary("or", std::move(e), parse_and(), pos);
    }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      const SourcePos pos = next().pos;
      e = binary("and", std::move(e), parse_not(), pos);
    }
    return e;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this, cur().pos);
      ExprPtr e = make(ExprKind::unary, next().pos);
      e->name = "not", e->a = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const SourcePos pos = cur().pos;
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == TokenType::op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                          cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        ++i_, op = "in";
      } else if (is_name("not") && peek().type == TokenType::name && peek().text == "in") {
        i_ += 2, op = "not in";
      } else {
        break;
      }
      if (!cmp) cmp = make(ExprKind::compare, pos), cmp->a = std::move(first);
      cmp->ops.push_back(op);
      cmp->items.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token t = next();
      e = binary(t.text, std::move(e), parse_concat(), t.pos);
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      const Token t = next();
      e = binary("~", std::move(e), parse_math2(), t.pos);
    }
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token t = next();
      e = binary(t.text, std::move(e), parse_pow(), t.pos);
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (is_op("**")) {
      const Token t = next();
      e = binary("**", std::move(e), parse_unary(true), t.pos);
    }
    return e;
  }

  // Jinja: unary minus binds to its operand before postfix and filters: `-x|abs` is (-x)|abs.
  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this, cur().pos);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token t = next();
      e = make(ExprKind::unary, t.pos);
      e->name = t.text, e->a = parse_unary(false);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    ExprPtr e;
    switch (t.type) {
      case TokenType::name: {
        e = make(ExprKind::literal, t.pos);
        if (t.text == "true" || t.text == "True") e->value = Value(true);
        else if (t.text == "false" || t.text == "False") e->value = Value(false);
        else if (t.text == "none" || t.text == "None") e->value = Value(None{});
        else e->kind = ExprKind::name, e->name = t.text;
        ++i_;
        return e;
      }
      case TokenType::string: {
        e = make(ExprKind::literal, t.pos);
        std::string s;
        while (cur().type == TokenType::string) s += next().text;  // adjacent literals concatenate
        e->value = Value(std::move(s));
        return e;
      }
      case TokenType::integer:
        e = make(ExprKind::literal, t.pos), e->value = Value(t.int_value), ++i_;
        return e;
      case TokenType::floating:
        e = make(ExprKind::literal, t.pos), e->value = Value(t.float_value), ++i_;
        return e;
      default: break;
    }
    if (skip_op("(")) {
      if (skip_op(")")) return make(ExprKind::tuple, t.pos);
      ExprPtr inner = parse_expr();
      if (is_op(",")) {
        ExprPtr tuple = make(ExprKind::tuple, t.pos);
        tuple->items.push_back(std::move(inner));
        while (skip_op(",") && !is_op(")")) tuple->items.push_back(parse_expr());
        inner = std::move(tuple);
      }
      expect_op(")");
      return inner;
    }
    if (skip_op("[")) {
      e = make(ExprKind::list, t.pos);
      while (!is_op("]")) {
        if (!e->items.empty()) expect_op(",");
        if (is_op("]")) break;
        e->items.push_back(parse_expr());
      }
      expect_op("]");
      return e;
    }
    if (skip_op("{")) {
      e = make(ExprKind::dict, t.pos);
      while (!is_op("}")) {
        if (!e->items.empty()) expect_op(",");
        if (is_op("}")) break;
        e->items.push_back(parse_expr());
        expect_op(":");
        e->items.push_back(parse_expr());
      }
      expect_op("}");
      return e;
    }
    error(t.pos, fmt::format("unexpected {} in an expression", describe(t)));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        const SourcePos pos = next().pos;
        if (cur().type == TokenType::integer) {  // messages.0 is messages[0]
          ExprPtr item = make(ExprKind::item, pos);
          item->a = std::move(e), item->b = make(ExprKind::literal, cur().pos);
          item->b->value = Value(next().int_value);
          e = std::move(item);
        } else {
          ExprPtr attr = make(ExprKind::attr, pos);
          attr->a = std::move(e), attr->name = expect_identifier();
          e = std::move(attr);
        }
      } else if (is_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    const SourcePos pos = next().pos;  // '['
    ExprPtr parts[3];
    int colons = 0;
    while (!is_op("]")) {
      if (skip_op(":")) {
        if (++colons > 2) error(cur().pos, "a slice has at most two ':'");
        continue;
      }
      if (parts[colons]) error(cur().pos, fmt::format("expected ']' or ':', found {}", describe(cur())));
      parts[colons] = parse_expr();
    }
    expect_op("]");
    if (colons == 0) {
      if (!parts[0]) error(pos, "empty subscript");
      ExprPtr e = make(ExprKind::item, pos);
      e->a = std::move(obj), e->b = std::move(parts[0]);
      return e;
    }
    ExprPtr e = make(ExprKind::slice, pos);
    e->a = std::move(obj);
    for (auto& p : parts) e->items.push_back(std::move(p));
    return e;
  }

  void parse_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (!e.items.empty() || !e.kwargs.empty()) expect_op(",");
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) error(cur().pos, "*args and **kwargs in calls are not supported");
      if (cur().type == TokenType::name && peek().type == TokenType::op && peek().text == "=") {
        std::string key = next().text;
        ++i_;
        e.kwargs.emplace_back(std::move(key), parse_expr());
      } else {
        if (!e.kwargs.empty()) error(cur().pos, "positional argument after a keyword argument");
        e.items.push_back(parse_expr());
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    ExprPtr e = make(ExprKind::call, cur().pos);
    e->a = std::move(callee);
    parse_args(*e);
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) e = parse_filter(std::move(e));
      else if (is_name("is")) e = parse_test(std::move(e));
      else if (is_op("(")) e = parse_call(std::move(e));
      else return e;
    }
  }

  // `| name` or `| name(args)`; `input` is null for {% set x | filter %}.
  ExprPtr parse_filter(ExprPtr input, bool leading_pipe = true) {
    if (leading_pipe) expect_op("|");
    ExprPtr f = make(ExprKind::filter, cur().pos);
    f->a = std::move(input);
    f->name = expect_identifier();
    if (is_op("(")) parse_args(*f);
    return f;
  }

  ExprPtr parse_test(ExprPtr input) {
    ++i_;  // 'is'
    ExprPtr t = make(ExprKind::test, cur().pos);
    t->a = std::move(input);
    t->negated = skip_name("not");
    t->name = expect_identifier();
    if (is_op("(")) {
      parse_args(*t);
    } else if ((cur().type == TokenType::string || cur().type == TokenType::integer ||
                cur().type == TokenType::floating || is_op("[") || is_op("{") ||
                (cur().type == TokenType::name && !is_name("else") && !is_name("or") && !is_name("and") &&
                 !is_name("if") && !is_name("in") && !is_name("not") && !is_name("is")))) {
      t->items.push_back(parse_postfix(parse_primary()));  // `x is divisibleby 3`
    }
    return t;
  }

  std::vector<Token> toks_;
  size_t i_ = 0;
  const std::string& name_;
  int depth_ = 0;
};

}  // namespace

Program parse(std::string_view source, std::string name, LexOptions opts) {
  Program p;
  p.name = std::move(name);
  p.body = Parser(tokenize(source, p.name, opts), p.name).parse_template();
  return p;
}

}  // namespace sft::jinja
