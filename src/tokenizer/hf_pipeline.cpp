// tokenizer.json normalizers, pre-tokenizers, decoders and post-processors, transcribed from HF
// tokenizers 0.19 (normalizers/, pre_tokenizers/, decoders/, processors/ and
// NormalizedString::split for the five SplitDelimiterBehavior values).
#include "tokenizer/hf_pipeline.h"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace sft {

using nlohmann::json;

namespace {

// The GPT-2 split regex that ByteLevel(use_regex=true) applies.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Rust char::is_whitespace (Unicode White_Space).
bool is_white_space(char32_t c) { return utf8::is_py_space(c) && !(c >= 0x1C && c <= 0x1F); }

std::string type_of(const json& j) { return j.is_object() ? j.value("type", "") : ""; }

Pattern parse_pattern(const json& j, const std::string& where) {
  Pattern p;
  if (j.is_object() && j.contains("String")) p.literal = j["String"].get<std::string>();
  else if (j.is_object() && j.contains("Regex")) p.regex = std::make_shared<Regex>(j["Regex"].get<std::string>());
  else if (j.is_string()) p.literal = j.get<std::string>();
  else fail("tokenizer", "{}: pattern {} is neither {{\"String\"}} nor {{\"Regex\"}}", where, j.dump());
  return p;
}

std::string replace_all(std::string_view s, const Pattern& p, std::string_view with) {
  std::vector<std::pair<size_t, size_t>> m;
  p.find_all(s, m);
  if (m.empty()) return std::string(s);
  std::string out;
  size_t prev = 0;
  for (auto [a, b] : m) {
    out.append(s.substr(prev, a - prev));
    out.append(with);
    prev = b;
  }
  out.append(s.substr(prev));
  return out;
}

const Regex& gpt2_regex() {
  static const Regex re(kGpt2Pattern);
  return re;
}

}  // namespace

void Pattern::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  if (regex) {
    regex->find_all(s, out);
    return;
  }
  if (literal.empty()) return;
  for (size_t pos = s.find(literal); pos != std::string_view::npos; pos = s.find(literal, pos + literal.size()))
    out.emplace_back(pos, pos + literal.size());
}

// ---- normalizers -------------------------------------------------------------------------

Normalizer::Normalizer(const json& j, const std::string& where) {
  if (!j.is_null()) add(j, where);
}

void Normalizer::add(const json& j, const std::string& where) {
  const std::string type = type_of(j);
  if (type == "Sequence") {
    for (const json& n : j.at("normalizers")) add(n, where);
  } else if (type == "Prepend") {
    steps_.push_back({NormalizerStep::Kind::prepend, j.at("prepend").get<std::string>(), {}});
  } else if (type == "Replace") {
    steps_.push_back({NormalizerStep::Kind::replace, j.at("content").get<std::string>(), parse_pattern(j.at("pattern"), where)});
  } else if (type == "Strip") {
    NormalizerStep s{NormalizerStep::Kind::strip, "", {}};
    s.strip_left = j.value("strip_left", false);
    s.strip_right = j.value("strip_right", false);
    steps_.push_back(std::move(s));
  } else {
    fail("tokenizer", "{}: normalizer '{}' is not supported", where, type.empty() ? j.dump() : type);
  }
}

std::string Normalizer::apply(std::string_view in) const {
  std::string s(in);
  for (const NormalizerStep& step : steps_) {
    switch (step.kind) {
      case NormalizerStep::Kind::prepend:
        if (!s.empty()) s.insert(0, step.text);
        break;
      case NormalizerStep::Kind::replace:
        s = replace_all(s, step.pattern, step.text);
        break;
      case NormalizerStep::Kind::strip: {
        size_t a = 0, b = s.size();
        while (step.strip_left && a < b) {
          size_t k = a;
          if (!is_white_space(utf8::next(s, k))) break;
          a = k;
        }
        while (step.strip_right && b > a && is_white_space(utf8::last(std::string_view(s).substr(a, b - a)))) {
          --b;
          while (b > a && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
        }
        s = s.substr(a, b - a);
        break;
      }
    }
  }
  return s;
}

// ---- pre-tokenizers ----------------------------------------------------------------------

PreTokenizer::PreTokenizer(const json& j, const std::string& where) {
  if (!j.is_null()) add(j, where);
}

void PreTokenizer::add(const json& j, const std::string& where) {
  const std::string type = type_of(j);
  Step s{};
  if (type == "Sequence") {
    for (const json& p : j.at("pretokenizers")) add(p, where);
    return;
  } else if (type == "Split") {
    s.kind = Step::Kind::split;
    s.pattern = parse_pattern(j.at("pattern"), where);
    has_regex_split_ |= s.pattern.regex != nullptr;
    const std::string b = j.value("behavior", "Isolated");
    s.behavior = b == "Removed" ? "removed" : b == "Isolated" ? "isolated" : b == "MergedWithPrevious" ? "merged_with_previous"
               : b == "MergedWithNext" ? "merged_with_next" : b == "Contiguous" ? "contiguous" : "";
    if (s.behavior.empty()) fail("tokenizer", "{}: Split behavior '{}' is unknown", where, b);
    s.invert = j.value("invert", false);
  } else if (type == "ByteLevel") {
    s.kind = Step::Kind::byte_level;
    s.add_prefix_space = j.value("add_prefix_space", true);
    s.use_regex = j.value("use_regex", true);
    has_regex_split_ |= s.use_regex;
  } else if (type == "Metaspace") {
    s.kind = Step::Kind::metaspace;
    s.replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) s.prepend_scheme = j["prepend_scheme"];
    else s.prepend_scheme = j.value("add_prefix_space", true) ? "always" : "never";
    if (s.prepend_scheme != "always" && s.prepend_scheme != "first" && s.prepend_scheme != "never")
      fail("tokenizer", "{}: Metaspace prepend_scheme '{}' is unknown", where, s.prepend_scheme);
    s.split_on_replacement = j.value("split", true);
  } else {
    fail("tokenizer", "{}: pre-tokenizer '{}' is not supported", where, type.empty() ? j.dump() : type);
  }
  steps_.push_back(std::move(s));
}

namespace {

// NormalizedString::split: the (start, end) pieces kept for a behavior, given the matches.
void split_by(std::string_view s, const std::vector<std::pair<size_t, size_t>>& matches, const std::string& behavior,
              bool invert, std::vector<std::pair<size_t, size_t>>& pieces) {
  struct Span {
    size_t a, b;
    bool match;
  };
  std::vector<Span> spans;  // covers s
  size_t prev = 0;
  for (auto [a, b] : matches) {
    if (a > prev) spans.push_back({prev, a, invert});
    spans.push_back({a, b, !invert});
    prev = b;
  }
  if (prev < s.size()) spans.push_back({prev, s.size(), invert});
  std::vector<Span> out;
  if (behavior == "isolated" || behavior == "removed") {
    for (const Span& sp : spans)
      if (behavior == "isolated" || !sp.match) out.push_back(sp);
  } else if (behavior == "contiguous" || behavior == "merged_with_previous") {
    bool prev_match = false;
    for (const Span& sp : spans) {
      bool merge = behavior == "contiguous" ? sp.match == prev_match : sp.match && !prev_match;
      if (merge && !out.empty()) out.back().b = sp.b;
      else out.push_back(sp);
      prev_match = sp.match;
    }
  } else {  // merged_with_next: the same from the right
    bool prev_match = false;
    for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
      if (it->match && !prev_match && !out.empty()) out.back().a = it->a;
      else out.push_back(*it);
      prev_match = it->match;
    }
    std::reverse(out.begin(), out.end());
  }
  for (const Span& sp : out)
    if (sp.b > sp.a) pieces.emplace_back(sp.a, sp.b);
}

}  // namespace

void PreTokenizer::run_step(const Step& step, std::vector<PreToken>& pieces) const {
  std::vector<PreToken> next;
  next.reserve(pieces.size() * 2);
  std::vector<std::pair<size_t, size_t>> matches, spans;
  const auto& bl = utf8::byte_level_map();
  for (PreToken& p : pieces) {
    matches.clear();
    spans.clear();
    switch (step.kind) {
      case Step::Kind::split:
        step.pattern.find_all(p.text, matches);
        split_by(p.text, matches, step.behavior, step.invert, spans);
        for (auto [a, b] : spans) next.push_back({p.text.substr(a, b - a), p.first && a == 0});
        break;
      case Step::Kind::byte_level: {
        if (step.add_prefix_space && !p.text.starts_with(' ')) p.text.insert(0, " ");
        if (step.use_regex) {
          gpt2_regex().find_all(p.text, matches);
          split_by(p.text, matches, "isolated", false, spans);
        } else {
          spans.emplace_back(0, p.text.size());
        }
        for (auto [a, b] : spans) {
          std::string mapped;
          mapped.reserve((b - a) * 2);
          for (size_t k = a; k < b; ++k) mapped += bl.byte_to_text[static_cast<unsigned char>(p.text[k])];
          next.push_back({std::move(mapped), p.first && a == 0});
        }
        break;
      }
      case Step::Kind::metaspace: {
        std::string t = replace_all(p.text, Pattern{" ", nullptr}, step.replacement);
        bool prepend = step.prepend_scheme == "always" || (step.prepend_scheme == "first" && p.first);
        if (prepend && !t.starts_with(step.replacement)) t.insert(0, step.replacement);
        if (step.split_on_replacement) {
          Pattern{step.replacement, nullptr}.find_all(t, matches);
          split_by(t, matches, "merged_with_next", false, spans);
          for (auto [a, b] : spans) next.push_back({t.substr(a, b - a), p.first && a == 0});
        } else if (!t.empty()) {
          next.push_back({std::move(t), p.first});
        }
        break;
      }
    }
  }
  pieces.swap(next);
}

void PreTokenizer::apply(std::string_view s, bool first, std::vector<PreToken>& out) const {
  if (s.empty()) return;
  std::vector<PreToken> pieces{{std::string(s), first}};
  for (const Step& step : steps_) run_step(step, pieces);
  for (PreToken& p : pieces)
    if (!p.text.empty()) out.push_back(std::move(p));
}

// ---- decoders ----------------------------------------------------------------------------

Decoder::Decoder(const json& j, const std::string& where) {
  if (j.is_null()) return;
  none_ = false;
  add(j, where);
}

void Decoder::add(const json& j, const std::string& where) {
  const std::string type = type_of(j);
  Step s{};
  if (type == "Sequence") {
    for (const json& d : j.at("decoders")) add(d, where);
    return;
  } else if (type == "ByteLevel") {
    s.kind = Step::Kind::byte_level;
  } else if (type == "Replace") {
    s.kind = Step::Kind::replace;
    const json& p = j.at("pattern");
    if (!p.contains("String")) fail("tokenizer", "{}: Replace decoder supports String patterns only", where);
    s.from = p["String"].get<std::string>();
    s.to = j.at("content").get<std::string>();
  } else if (type == "ByteFallback") {
    s.kind = Step::Kind::byte_fallback;
  } else if (type == "Fuse") {
    s.kind = Step::Kind::fuse;
  } else if (type == "Strip") {
    s.kind = Step::Kind::strip;
    s.content = j.value("content", std::string(" "));
    s.start = j.value("start", 0);
    s.stop = j.value("stop", 0);
  } else if (type == "Metaspace") {
    s.kind = Step::Kind::metaspace;
    s.from = j.value("replacement", std::string("\xE2\x96\x81"));
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) s.prepend = j["prepend_scheme"] != "never";
    else s.prepend = j.value("add_prefix_space", true);
  } else {
    fail("tokenizer", "{}: decoder '{}' is not supported", where, type.empty() ? j.dump() : type);
  }
  steps_.push_back(std::move(s));
}

std::string Decoder::apply(std::vector<std::string> tokens) const {
  if (none_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  const auto& bl = utf8::byte_level_map();
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Step::Kind::byte_level: {  // chars -> bytes; a token with an unmapped char keeps its UTF-8
        std::string bytes;
        for (const std::string& t : tokens) {
          std::string mapped;
          bool ok = true;
          for (size_t i = 0; i < t.size() && ok;) {
            char32_t cp = utf8::next(t, i);
            ok = cp < bl.cp_to_byte.size() && bl.cp_to_byte[cp] >= 0;
            if (ok) mapped += static_cast<char>(bl.cp_to_byte[cp]);
          }
          bytes += ok ? mapped : t;
        }
        tokens = {utf8::lossy(bytes)};
        break;
      }
      case Step::Kind::replace:
        for (std::string& t : tokens) t = replace_all(t, Pattern{step.from, nullptr}, step.to);
        break;
      case Step::Kind::byte_fallback: {
        std::vector<std::string> out;
        std::string pending;  // bytes of consecutive <0xXX> tokens
        const auto flush = [&] {
          if (pending.empty()) return;
          if (utf8::find_invalid(pending) == std::string::npos) out.push_back(pending);
          else
            for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
          pending.clear();
        };
        for (std::string& t : tokens) {
          bool is_byte = t.size() == 6 && t.starts_with("<0x") && t.back() == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
                         std::isxdigit(static_cast<unsigned char>(t[4]));
          if (is_byte) {
            pending += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case Step::Kind::fuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens = {all};
        break;
      }
      case Step::Kind::strip:
        for (std::string& t : tokens) {
          std::string_view v = t;
          for (int i = 0; i < step.start && v.starts_with(step.content); ++i) v.remove_prefix(step.content.size());
          for (int i = 0; i < step.stop && v.ends_with(step.content); ++i) v.remove_suffix(step.content.size());
          t = std::string(v);
        }
        break;
      case Step::Kind::metaspace:  // the first token loses every replacement char (as HF 0.19)
        for (size_t i = 0; i < tokens.size(); ++i)
          tokens[i] = replace_all(tokens[i], Pattern{step.from, nullptr}, i == 0 && step.prepend ? "" : " ");
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

// ---- post-processors ---------------------------------------------------------------------

PostProcessor::PostProcessor(const json& j, const std::string& where) {
  if (j.is_null()) return;
  const std::string type = type_of(j);
  if (type == "Sequence") {
    for (const json& p : j.at("processors")) {
      PostProcessor inner(p, where);
      prefix.insert(prefix.begin(), inner.prefix.begin(), inner.prefix.end());
      suffix.insert(suffix.end(), inner.suffix.begin(), inner.suffix.end());
    }
  } else if (type == "ByteLevel") {
  } else if (type == "TemplateProcessing") {
    const json& specials = j.at("special_tokens");
    bool seen_a = false;
    for (const json& item : j.at("single")) {
      if (item.contains("Sequence")) {
        seen_a = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = item["SpecialToken"].at("id").get<std::string>();
        if (!specials.contains(name)) fail("tokenizer", "{}: TemplateProcessing special token '{}' is not defined", where, name);
        for (const json& id : specials[name].at("ids")) (seen_a ? suffix : prefix).push_back(id.get<int32_t>());
      }
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    prefix.push_back(j.at("cls").at(1).get<int32_t>());
    suffix.push_back(j.at("sep").at(1).get<int32_t>());
  } else {
    fail("tokenizer", "{}: post-processor '{}' is not supported", where, type.empty() ? j.dump() : type);
  }
}

}  // namespace sft
