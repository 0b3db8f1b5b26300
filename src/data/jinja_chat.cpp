// The model's chat template: lookup with HF's precedence, the apply_chat_template variables, and
// trained spans by prefix rendering: for assistant message i, P = render(messages[:i],
// add_generation_prompt=True) ends where the answer starts, Q = render(messages[:i+1]) ends after
// the template's end of turn; the answer is Q[|P|:] without trailing whitespace (ChatML's "\n"
// after <|im_end|> stays untrained). P and Q must be prefixes of the whole rendering (Q up to a
// tail that the whole rendering ends with: text written only after the last message).
// Reference: transformers tokenization_utils_base.py (get_chat_template, apply_chat_template).
#include "data/jinja_chat.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "core/file_util.h"
#include "tokenizer/tokenizer_config.h"
#include "tokenizer/utf8.h"

namespace sft {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  SFT_CHECK(in, "data", "cannot read {}", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Python str.rstrip(): the length of `s` without trailing whitespace, but not below `floor`.
size_t rstrip_length(const std::string& s, size_t floor) {
  size_t end = s.size();
  while (end > floor) {
    size_t start = end - 1;
    while (start > floor && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t i = start;
    if (!utf8::is_py_space(utf8::next(s, i))) break;
    end = start;
  }
  return end;
}

void add_segment(std::vector<Segment>& segs, std::string_view text, bool train) {
  if (text.empty()) return;
  if (segs.empty() || segs.back().train != train) segs.push_back(Segment{std::string(), train});
  segs.back().text += text;
}

}  // namespace

std::optional<ChatTemplateSource> find_chat_template(const std::string& model_dir, std::string_view name,
                                                     bool with_tools) {
  const fs::path dir(model_dir);
  if (fs::exists(dir / "chat_template.jinja") && name.empty())
    return ChatTemplateSource{read_text(dir / "chat_template.jinja"), (dir / "chat_template.jinja").string()};
  const fs::path cfg_path = dir / "tokenizer_config.json";
  if (!fs::exists(cfg_path)) return std::nullopt;
  ordered_json cfg;
  const std::string cfg_text = read_text(cfg_path);
  SFT_CHECK(json_nesting_depth(cfg_text) <= kMaxJsonNesting, "data",
            "{}: not valid JSON: arrays and objects nested more than {} levels deep", cfg_path.string(), kMaxJsonNesting);
  try {
    cfg = ordered_json::parse(cfg_text);
  } catch (const nlohmann::json::exception& e) {
    fail("data", "{}: not valid JSON: {}", cfg_path.string(), e.what());
  }
  if (!cfg.is_object() || !cfg.contains("chat_template") || cfg["chat_template"].is_null()) return std::nullopt;
  const ordered_json& ct = cfg["chat_template"];
  if (ct.is_string()) return ChatTemplateSource{ct.get<std::string>(), cfg_path.string()};
  SFT_CHECK(ct.is_array(), "data", "{}: chat_template is a {}, expected a string or a list of {{name, template}}",
            cfg_path.string(), ct.type_name());
  std::vector<std::pair<std::string, std::string>> named;
  for (const ordered_json& t : ct) {
    SFT_CHECK(t.is_object() && t.contains("name") && t["name"].is_string() && t.contains("template") &&
                  t["template"].is_string(),
              "data", "{}: each chat_template entry must be {{\"name\": str, \"template\": str}}", cfg_path.string());
    named.emplace_back(t["name"].get<std::string>(), t["template"].get<std::string>());
  }
  auto pick = [&](std::string_view n) -> std::optional<ChatTemplateSource> {
    for (const auto& [k, v] : named)
      if (k == n) return ChatTemplateSource{v, cfg_path.string() + " [" + k + "]"};
    return std::nullopt;
  };
  std::string names;
  for (const auto& [k, v] : named) names += (names.empty() ? "" : ", ") + k;
  if (!name.empty()) {
    if (auto t = pick(name)) return t;
    fail("data", "{}: no chat template named '{}' (it has: {})", cfg_path.string(), name, names);
  }
  if (with_tools)
    if (auto t = pick("tool_use")) return t;
  if (auto t = pick("default")) return t;
  fail("data", "{}: several chat templates ({}) and none named 'default'", cfg_path.string(), names);
}

ModelChatTemplate ModelChatTemplate::load(const std::string& model_dir, bool with_tools) {
  std::optional<ChatTemplateSource> src = find_chat_template(model_dir, "", with_tools);
  SFT_CHECK(src, "data",
            "{}: --conversation_template auto needs the model's chat template, but the directory has neither "
            "chat_template.jinja nor a chat_template in tokenizer_config.json; pick a built-in template instead",
            model_dir);
  // HF passes special_tokens_map: the tokens that are set (unset ones stay undefined).
  const TokenizerConfig cfg = read_tokenizer_config(model_dir);
  jinja::Dict tokens;
  const std::pair<const char*, const TokenizerConfig::Special*> named[] = {
      {"bos_token", &cfg.bos_token}, {"eos_token", &cfg.eos_token}, {"unk_token", &cfg.unk_token}, {"pad_token", &cfg.pad_token}};
  for (const auto& [key, special] : named)
    if (special->content) tokens.set(key, jinja::Value(*special->content));
  if (!cfg.additional_special_tokens.empty()) {
    jinja::List extra;
    for (const std::string& t : cfg.additional_special_tokens) extra.emplace_back(t);
    tokens.set("additional_special_tokens", jinja::Value(std::move(extra)));
  }
  return ModelChatTemplate(std::move(*src), std::move(tokens));
}

ModelChatTemplate::ModelChatTemplate(ChatTemplateSource source, jinja::Dict special_tokens)
    : source_(std::move(source)), template_(source_.text, source_.origin), special_tokens_(std::move(special_tokens)) {}

jinja::RenderResult ModelChatTemplate::render_values(jinja::Value messages, jinja::Value tools,
                                                     bool add_generation_prompt) const {
  jinja::Dict ctx;
  ctx.set("messages", std::move(messages));
  ctx.set("tools", std::move(tools));
  ctx.set("documents", jinja::Value(jinja::None{}));
  ctx.set("add_generation_prompt", jinja::Value(add_generation_prompt));
  for (const auto& [k, v] : special_tokens_) ctx.set(k, v);
  return template_.render(ctx);
}

std::string ModelChatTemplate::render(const ordered_json& messages, const ordered_json& tools,
                                      bool add_generation_prompt) const {
  // transformers 5 drops a message's null-valued keys before rendering (a "content": null beside
  // "tool_calls" is then undefined to the template, not None): the same here.
  ordered_json clean = messages;
  if (clean.is_array())
    for (ordered_json& m : clean)
      if (m.is_object())
        for (auto it = m.begin(); it != m.end();) it = it.value().is_null() ? m.erase(it) : std::next(it);
  return render_values(jinja::Value::from_json(clean), jinja::Value::from_json(tools), add_generation_prompt).text;
}

namespace {

const char* role_name(Role r) {
  switch (r) {
    case Role::system: return "system";
    case Role::user: return "user";
    case Role::assistant: return "assistant";
    case Role::tool: return "tool";
  }
  return "?";
}

// json.dumps(s, ensure_ascii=False) of a string: how templates that print a tool result with
// tojson (LLaMA-3.1: a string "is iterable") show it.
std::string json_string(const std::string& s) { return ordered_json(s).dump(); }

}  // namespace

ordered_json ModelChatTemplate::messages_of(const Conversation& conv) {
  ordered_json out = ordered_json::array();
  if (conv.system) out.push_back({{"role", "system"}, {"content", *conv.system}});
  for (const Message& m : conv.messages) {
    ordered_json msg = ordered_json::object();
    msg["role"] = role_name(m.role);
    if (m.role == Role::tool) {
      if (!m.tool_call_id.empty()) msg["tool_call_id"] = m.tool_call_id;
      if (!m.name.empty()) msg["name"] = m.name;
    }
    if (m.tool_calls.empty() || !m.content.empty()) msg["content"] = m.content;
    if (!m.tool_calls.empty()) {
      ordered_json calls = ordered_json::array();
      for (const ToolCall& c : m.tool_calls) {
        ordered_json call = ordered_json::object();
        if (!c.id.empty()) call["id"] = c.id;
        call["type"] = "function";
        call["function"] = {{"name", c.name}, {"arguments", ordered_json::parse(c.arguments)}};
        calls.push_back(std::move(call));
      }
      msg["tool_calls"] = std::move(calls);
    }
    out.push_back(std::move(msg));
  }
  return out;
}

ordered_json ModelChatTemplate::tools_of(const Conversation& conv) {
  return conv.tools.empty() ? ordered_json(nullptr) : ordered_json::parse(conv.tools);
}

std::optional<std::vector<Segment>> ModelChatTemplate::render_segments(const Conversation& conv, std::string* why,
                                                                       IssueKind* kind) const {
  const jinja::Value value = jinja::Value::from_json(messages_of(conv));
  const jinja::List& messages = value.list();
  const jinja::Value tools = jinja::Value::from_json(tools_of(conv));
  const jinja::RenderResult whole = render_values(value, tools, false);
  const std::string& full = whole.text;
  // A template without tool support may skip tool calls or tool results silently: each call's
  // function name must be in the text trained for its message, each result's text (as is, or
  // as tojson prints it) in the rendering.
  const size_t first_message = conv.system ? 1 : 0;
  const auto unsupported = [&](size_t i, const std::string& what) {
    if (kind) *kind = IssueKind::tools_unsupported;
    *why = fmt::format("{}: the template does not render tool calls and results: {} of messages[{}] (the template's "
                       "input; conversation message {}) is not in its rendering",
                       source_.origin, what, i, i - first_message);
    return std::nullopt;
  };
  for (size_t i = first_message; i < messages.size(); ++i) {
    const Message& m = conv.messages[i - first_message];
    if (m.role == Role::tool && !m.content.empty() && full.find(m.content) == std::string::npos &&
        full.find(json_string(m.content)) == std::string::npos)
      return unsupported(i, "the tool result");
  }
  std::vector<Segment> segs;
  size_t pos = 0;
  if (!whole.generation_spans.empty()) {  // the template marks the trained text itself
    std::string trained;
    for (const auto& [b, e] : whole.generation_spans) {
      add_segment(segs, std::string_view(full).substr(pos, b - pos), false);
      add_segment(segs, std::string_view(full).substr(b, e - b), true);
      trained += std::string_view(full).substr(b, e - b);
      pos = e;
    }
    add_segment(segs, std::string_view(full).substr(pos), false);
    for (size_t i = first_message; i < messages.size(); ++i)
      for (const ToolCall& c : conv.messages[i - first_message].tool_calls)
        if (trained.find(c.name) == std::string::npos) return unsupported(i, fmt::format("the call of '{}'", c.name));
    return segs;
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!equal(*messages[i].dict().find("role"), jinja::Value("assistant"))) continue;
    const auto first = messages.begin();
    const std::string prompt = render_values(jinja::List(first, first + static_cast<std::ptrdiff_t>(i)), tools, true).text;
    const std::string turn = render_values(jinja::List(first, first + static_cast<std::ptrdiff_t>(i) + 1), tools, false).text;
    // The turn may end with text the template writes only after the last message (Phi-3's and
    // InternLM2's closing eos_token): accepted when the whole rendering ends with that same text.
    size_t common = static_cast<size_t>(
        std::mismatch(turn.begin(), turn.end(), full.begin(), full.end()).first - turn.begin());
    if (common < turn.size()) {
      // The two continuations may share the start of a special token ("<|" of <|endoftext|> and
      // <|user|>): the tail starts at that token's '<'.
      const size_t lt = turn.rfind('<', common > 0 ? common - 1 : 0);
      if (lt != std::string::npos && lt >= prompt.size() && turn.find('>', lt) >= common) common = lt;
    }
    const bool tail_only = common == turn.size() || full.ends_with(std::string_view(turn).substr(common));
    if (!full.starts_with(prompt) || !turn.starts_with(prompt) || prompt.size() < pos || !tail_only) {
      if (kind) *kind = IssueKind::template_split;
      *why = fmt::format("{}: the template's rendering of messages[:{}] (with the generation prompt) or of "
                         "messages[:{}] is not a prefix of its rendering of the whole conversation (it rewrites earlier "
                         "turns), so the answer of message {} cannot be located",
                         source_.origin, i, i + 1, i);
      return std::nullopt;
    }
    const size_t end = rstrip_length(turn.substr(0, common), prompt.size());
    const std::string_view answer = std::string_view(full).substr(prompt.size(), end - prompt.size());
    for (const ToolCall& c : conv.messages[i - first_message].tool_calls)
      if (answer.find(c.name) == std::string_view::npos) return unsupported(i, fmt::format("the call of '{}'", c.name));
    add_segment(segs, std::string_view(full).substr(pos, prompt.size() - pos), false);
    add_segment(segs, answer, true);
    pos = end;
  }
  add_segment(segs, std::string_view(full).substr(pos), false);
  return segs;
}

ConversationRenderer::ConversationRenderer(std::string_view name, const std::string& model_dir) {
  if (name == "auto") {
    model_.emplace(ModelChatTemplate::load(model_dir));
    // HF renders a sample with tools with the template named "tool_use" when there is one.
    if (std::optional<ChatTemplateSource> t = find_chat_template(model_dir, "", true); t && t->origin != model_->origin())
      model_tools_.emplace(ModelChatTemplate::load(model_dir, true));
  } else {
    builtin_ = &find_template(name);
  }
}

std::optional<std::vector<Segment>> ConversationRenderer::render_segments(const Conversation& conv, std::string* why,
                                                                          IssueKind* kind) const {
  if (model_tools_ && !conv.tools.empty()) return model_tools_->render_segments(conv, why, kind);
  if (model_) return model_->render_segments(conv, why, kind);
  if (conv.has_tool_messages()) {
    if (kind) *kind = IssueKind::tools_unsupported;
    *why = fmt::format("the built-in template '{}' has no tool calls or tool results (use --conversation_template "
                       "auto with a model whose chat template renders tools)", builtin_->name);
    return std::nullopt;
  }
  return sft::render_segments(*builtin_, conv);
}

std::string ConversationRenderer::description() const {
  return model_ ? "auto (" + model_->origin() + ")" : std::string(builtin_->name);
}

}  // namespace sft
