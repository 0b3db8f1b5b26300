// The lexer: text is scanned for the next `{{`, `{%` or `{#`; the text before it is emitted
// after the whitespace rules, then the tag's contents are cut into tokens until its closing
// delimiter (ignored while brackets are open, as Jinja does). String escapes are Python's
// (Jinja decodes literals with "unicode-escape"). Reference: jinja2/lexer.py (3.1).
#include "data/jinja_lexer.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "core/check.h"
#include "tokenizer/utf8.h"

namespace sft::jinja {

void fail_at(std::string_view template_name, SourcePos pos, const std::string& message) {
  fail("jinja", "{} line {}, column {}: {}", template_name, pos.line, pos.col, message);
}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// Python's "\r\n" / "\r" -> "\n" (Jinja's newline_sequence), then one trailing newline dropped.
std::string normalize_newlines(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      out += '\n';
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else {
      out += src[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Length of the Python whitespace (str.isspace) character at s[i], 0 if none.
size_t space_at(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return utf8::is_py_space(c) ? 1 : 0;
  size_t j = i;
  return utf8::is_py_space(utf8::next(s, j)) ? j - i : 0;
}

// Python str.rstrip() on a UTF-8 string.
void rstrip_py(std::string& s) {
  while (!s.empty()) {
    size_t start = s.size() - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    if (space_at(s, start) != s.size() - start) break;
    s.resize(start);
  }
}

class Lexer {
 public:
  Lexer(std::string src, std::string_view name, LexOptions opts) : src_(std::move(src)), name_(name), opts_(opts) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  std::vector<Token> run() {
    bool line_starting = true;  // the previous tag ended with a newline (or this is the start)
    size_t pos = 0;
    while (pos < src_.size()) {
      const size_t tag = find_tag(pos);
      std::string text = src_.substr(pos, tag - pos);
      if (tag == src_.size()) {
        emit_text(std::move(text), pos);
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        rstrip_py(text);
      } else if (sign != '+' && opts_.lstrip_blocks && kind != '{') {
        const size_t l = text.rfind('\n') + 1;  // npos + 1 == 0
        if (l > 0 || line_starting) {
          size_t i = l;
          while (i < text.size() && space_at(text, i)) i += space_at(text, i);
          if (i == text.size()) text.resize(l);
        }
      }
      emit_text(std::move(text), pos);
      pos = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        pos = skip_comment(tag, pos);
      } else {
        tokens_.push_back(Token{kind == '{' ? TokenType::var_begin : TokenType::block_begin, "", 0, 0, pos_at(tag)});
        pos = lex_tag(kind == '{', tag, pos);
      }
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    tokens_.push_back(Token{TokenType::eof, "", 0, 0, pos_at(src_.size())});
    return std::move(tokens_);
  }

 private:
  SourcePos pos_at(size_t offset) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset) - 1;
    int col = 1;
    for (size_t i = *it; i < offset; ++i) col += (static_cast<unsigned char>(src_[i]) & 0xC0) != 0x80;
    return SourcePos{static_cast<int>(it - line_starts_.begin()) + 1, col};
  }

  [[noreturn]] void error(size_t offset, const std::string& message) const {
    fail_at(name_, pos_at(offset), message);
  }

  size_t find_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return src_.size();
  }

  void emit_text(std::string text, size_t offset) {
    if (!text.empty()) tokens_.push_back(Token{TokenType::text, std::move(text), 0, 0, pos_at(offset)});
  }

  // After a tag's closing delimiter: `-` strips all following whitespace, trim_blocks one newline.
  size_t after_tag_end(size_t pos, char sign, bool is_block) const {
    if (sign == '-') {
      while (size_t n = space_at(src_, pos)) pos += n;
    } else if (sign != '+' && is_block && opts_.trim_blocks && pos < src_.size() && src_[pos] == '\n') {
      ++pos;
    }
    return pos;
  }

  size_t skip_comment(size_t tag, size_t pos) const {
    const size_t end = src_.find("#}", pos);
    if (end == std::string::npos) error(tag, "comment '{#' is never closed with '#}'");
    const char sign = end > pos && src_[end - 1] == '-' ? '-' : '\0';
    return after_tag_end(end + 2, sign, true);
  }

  // Tokens of one {{ ... }} or {% ... %}; returns the offset after the closing delimiter.
  size_t lex_tag(bool is_var, size_t tag, size_t pos) {
    const std::string_view close = is_var ? "}}" : "%}";
    int depth = 0;  // open ( [ {
    while (true) {
      while (size_t n = space_at(src_, pos)) pos += n;
      if (pos >= src_.size()) error(tag, fmt::format("tag is never closed with '{}'", close));
      const std::string_view rest = std::string_view(src_).substr(pos);
      if (depth == 0) {
        char sign = '\0';
        size_t skip = 0;
        if (rest.starts_with(close)) skip = 2;
        else if ((rest[0] == '-' || (!is_var && rest[0] == '+')) && rest.substr(1).starts_with(close)) sign = rest[0], skip = 3;
        if (skip) {
          tokens_.push_back(Token{is_var ? TokenType::var_end : TokenType::block_end, "", 0, 0, pos_at(pos)});
          return after_tag_end(pos + skip, sign, !is_var);
        }
      }
      const char c = rest[0];
      if (is_digit(c)) {
        pos = lex_number(pos);
      } else if (is_name_start(c)) {
        size_t e = pos;
        while (e < src_.size() && is_name_char(src_[e])) ++e;
        tokens_.push_back(Token{TokenType::name, src_.substr(pos, e - pos), 0, 0, pos_at(pos)});
        pos = e;
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
      } else {
        static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        size_t len = 0;
        for (std::string_view op : kTwo)
          if (rest.starts_with(op)) len = 2;
        if (len == 0 && std::string_view("+-*/%~<>=()[]{},.:|").find(c) != std::string_view::npos) len = 1;
        if (len == 0) error(pos, fmt::format("unexpected character '{}' inside a tag", c));
        if (c == '(' || c == '[' || c == '{') ++depth;
        if (c == ')' || c == ']' || c == '}') {
          if (depth == 0) error(pos, fmt::format("unexpected '{}' (no bracket is open)", c));
          --depth;
        }
        tokens_.push_back(Token{TokenType::op, std::string(rest.substr(0, len)), 0, 0, pos_at(pos)});
        pos += len;
      }
    }
  }

  // Jinja's integer and float literals (with `_` separators); after a `.` only an integer
  // (`messages.0` is an item access).
  size_t lex_number(size_t pos) {
    auto digits = [&](size_t p) {
      while (p < src_.size() && (is_digit(src_[p]) || (src_[p] == '_' && p + 1 < src_.size() && is_digit(src_[p + 1])))) ++p;
      return p;
    };
    size_t e = digits(pos);
    bool is_float = false;
    const bool after_dot = pos > 0 && src_[pos - 1] == '.';
    if (!after_dot && e + 1 < src_.size() && src_[e] == '.' && is_digit(src_[e + 1])) is_float = true, e = digits(e + 1);
    if (!after_dot && e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t p = e + 1;
      if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
      if (p < src_.size() && is_digit(src_[p])) is_float = true, e = digits(p);
    }
    std::string lit;
    for (size_t i = pos; i < e; ++i)
      if (src_[i] != '_') lit += src_[i];
    Token t{is_float ? TokenType::floating : TokenType::integer, lit, 0, 0, pos_at(pos)};
    if (is_float) {
      t.float_value = std::strtod(lit.c_str(), nullptr);
    } else {
      errno = 0;
      t.int_value = std::strtoll(lit.c_str(), nullptr, 10);
      if (errno == ERANGE) error(pos, fmt::format("integer literal {} does not fit in 64 bits", lit));
    }
    tokens_.push_back(std::move(t));
    return e;
  }

  size_t lex_string(size_t pos) {
    const char quote = src_[pos];
    std::string out;
    size_t i = pos + 1;
    while (true) {
      if (i >= src_.size()) error(pos, "string literal is never closed");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        out += c, ++i;
        continue;
      }
      if (i + 1 >= src_.size()) error(pos, "string literal is never closed");
      i = decode_escape(i, out);
    }
    tokens_.push_back(Token{TokenType::string, std::move(out), 0, 0, pos_at(pos)});
    return i + 1;
  }

  // Python "unicode-escape" for the escape at src_[i] == '\\'; unknown escapes stay as written.
  size_t decode_escape(size_t i, std::string& out) const {
    const char e = src_[i + 1];
    auto hex = [&](size_t start, int count) -> size_t {
      char32_t cp = 0;
      for (int k = 0; k < count; ++k) {
        const size_t p = start + k;
        const char h = p < src_.size() ? src_[p] : '\0';
        int v = is_digit(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
        if (v < 0) error(i, fmt::format("truncated \\{} escape in a string literal", e));
        cp = cp * 16 + static_cast<char32_t>(v);
      }
      if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        error(i, fmt::format("escape \\{} gives U+{:X}, which is not a valid character", e, static_cast<uint32_t>(cp)));
      utf8::append(out, cp);
      return start + count;
    };
    switch (e) {
      case '\n': return i + 2;
      case '\\': out += '\\'; return i + 2;
      case '\'': out += '\''; return i + 2;
      case '"': out += '"'; return i + 2;
      case 'a': out += '\a'; return i + 2;
      case 'b': out += '\b'; return i + 2;
      case 'f': out += '\f'; return i + 2;
      case 'n': out += '\n'; return i + 2;
      case 'r': out += '\r'; return i + 2;
      case 't': out += '\t'; return i + 2;
      case 'v': out += '\v'; return i + 2;
      case 'x': return hex(i + 2, 2);
      case 'u': return hex(i + 2, 4);
      case 'U': return hex(i + 2, 8);
      default: break;
    }
    if (e >= '0' && e <= '7') {
      size_t p = i + 1;
      char32_t cp = 0;
      for (int k = 0; k < 3 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++k, ++p) cp = cp * 8 + (src_[p] - '0');
      utf8::append(out, cp);
      return p;
    }
    out += '\\';
    return i + 1;
  }

  std::string src_;
  std::string_view name_;
  LexOptions opts_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source, std::string_view template_name, LexOptions opts) {
  if (source.size() > kMaxTemplateBytes)
    fail("jinja", "{}: template is {} bytes, more than the {} accepted", template_name, source.size(), kMaxTemplateBytes);
  if (const size_t bad = utf8::find_invalid(source); bad != std::string_view::npos)
    fail("jinja", "{}: template is not valid UTF-8 (byte {})", template_name, bad);
  return Lexer(normalize_newlines(source), template_name, opts).run();
}

}  // namespace sft::jinja
