// Jinja lexer: template source -> a flat list of tokens (text runs, tag delimiters, and the
// names, literals and operators inside tags), with the whitespace rules applied here: `-`/`+`
// tag modifiers, trim_blocks and lstrip_blocks as HF's apply_chat_template sets them, newline
// normalisation and the dropped trailing newline (keep_trailing_newline=False).
// Reference: Jinja2 template designer docs, "Whitespace Control"; jinja2/lexer.py (3.1).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sft::jinja {

// 1-based line and column of a token or AST node in the template source.
struct SourcePos {
  int line = 1;
  int col = 1;
};

// Every template error goes through here: "[jinja] <name> line L, column C: <message>".
[[noreturn]] void fail_at(std::string_view template_name, SourcePos pos, const std::string& message);

enum class TokenType : uint8_t {
  text,         // raw template text between tags (already whitespace-controlled)
  var_begin,    // {{
  var_end,      // }}
  block_begin,  // {%
  block_end,    // %}
  name,         // identifier or keyword (if, for, in, not, and, or, is, true, none, ...)
  string,       // string literal, escapes decoded
  integer,
  floating,
  op,           // + - * / // % ** ~ == != < <= > >= = ( ) [ ] { } , . : |
  eof,
};

struct Token {
  TokenType type = TokenType::eof;
  std::string text;  // text run, name, decoded string, operator; empty for delimiters
  int64_t int_value = 0;
  double float_value = 0;
  SourcePos pos;
};

struct LexOptions {
  bool trim_blocks = true;   // drop the first newline after a block or comment tag
  bool lstrip_blocks = true;  // drop spaces/tabs from a line start up to a block or comment tag
};

// Largest template accepted (real chat templates are under 20 KiB).
constexpr size_t kMaxTemplateBytes = 1 << 20;

std::vector<Token> tokenize(std::string_view source, std::string_view template_name, LexOptions opts = {});

}  // namespace sft::jinja
