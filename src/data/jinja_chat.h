// A model's own chat template (`--conversation_template auto`): found as HF finds it
// (chat_template.jinja beside the tokenizer files, then tokenizer_config.json's `chat_template`,
// a string or a list of named templates), rendered through the Jinja interpreter with the
// variables HF's apply_chat_template passes (messages, tools, documents, add_generation_prompt
// and the special tokens), and split into trained / untrained segments by rendering prefixes.
// Reference: transformers PreTrainedTokenizerBase.apply_chat_template / get_chat_template.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/chat_template.h"
#include "data/conversation.h"
#include "data/jinja_eval.h"

namespace sft {

struct ChatTemplateSource {
  std::string text;    // the Jinja source
  std::string origin;  // "<dir>/chat_template.jinja" or "<dir>/tokenizer_config.json" (+ " [tool_use]")
};

// The chat template of a model directory, or nullopt when it has none. With a list of named
// templates, `name` picks one; else, as HF: "tool_use" when `with_tools` and it exists, then
// "default". sft::Error for a malformed tokenizer_config.json or a missing name.
std::optional<ChatTemplateSource> find_chat_template(const std::string& model_dir, std::string_view name = "",
                                                     bool with_tools = false);

class ModelChatTemplate {
 public:
  // Loads and parses the template of `model_dir` and its special tokens (tokenizer_config.json,
  // special_tokens_map.json). sft::Error when the directory has no template ("auto" needs one).
  // `with_tools`: the template HF picks for a sample with tools (a list's "tool_use" entry).
  static ModelChatTemplate load(const std::string& model_dir, bool with_tools = false);
  ModelChatTemplate(ChatTemplateSource source, jinja::Dict special_tokens);

  // The template's rendering of `messages` (HF message dicts), as apply_chat_template(...,
  // tokenize=False). `tools` may be a null JSON value.
  std::string render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                     bool add_generation_prompt) const;

  // HF message dicts of a validated conversation: its system message (when set) then the turns.
  // An assistant message with tool calls: {"role", "content" (only when not empty), "tool_calls":
  // [{"id"?, "type": "function", "function": {"name", "arguments"}}]}; a tool result: {"role":
  // "tool", "tool_call_id"?, "name"?, "content"}.
  static nlohmann::ordered_json messages_of(const Conversation& conv);
  // The sample's tools list, or null when it has none.
  static nlohmann::ordered_json tools_of(const Conversation& conv);

  // Segments whose concatenation is render(messages_of(conv), tools_of(conv), false). Trained:
  // each assistant turn's text (its tool calls as the template writes them) plus the end-of-turn
  // text the template puts after it, without the whitespace after that (found by rendering
  // message prefixes), or the template's {% generation %} spans when it has them; tool results
  // are never trained. nullopt with `why` and `kind` when a prefix's rendering is not a prefix of
  // the whole (template_split: a template that rewrites earlier turns), or when the template
  // leaves out a tool call (its function name is not in the message's trained text) or a tool
  // result (tools_unsupported).
  std::optional<std::vector<Segment>> render_segments(const Conversation& conv, std::string* why,
                                                      IssueKind* kind = nullptr) const;

  const std::string& origin() const { return source_.origin; }

 private:
  jinja::RenderResult render_values(jinja::Value messages, jinja::Value tools, bool add_generation_prompt) const;

  ChatTemplateSource source_;
  jinja::Template template_;
  jinja::Dict special_tokens_;
};

// What `--conversation_template` names: a built-in template (chat_template.h) or "auto", the
// model's own template from `model_dir`. The one object the data pipeline, `sft generate` and
// `sft data` need to render samples either way.
class ConversationRenderer {
 public:
  // A built-in name, or "auto" (then ModelChatTemplate::load(model_dir), with its errors).
  ConversationRenderer(std::string_view name, const std::string& model_dir);

  // Segments of a validated conversation; nullopt with `why` and `kind` when the model's template
  // cannot be split into turns or does not render tools (see ModelChatTemplate::render_segments),
  // and for a sample with tool calls or tool results under a built-in template (tools_unsupported;
  // a sample's tools list alone is not rendered by the built-in templates). A template's
  // raise_exception or a runtime error is an sft::Error naming the template's line and column.
  std::optional<std::vector<Segment>> render_segments(const Conversation& conv, std::string* why,
                                                      IssueKind* kind = nullptr) const;

  bool is_model_template() const { return model_.has_value(); }
  // "vicuna_v1.1", or "auto (<model_dir>/tokenizer_config.json)": what `sft data preview` shows.
  std::string description() const;

 private:
  const ChatTemplate* builtin_ = nullptr;
  std::optional<ModelChatTemplate> model_;
  std::optional<ModelChatTemplate> model_tools_;  // the "tool_use" template, when the model names one
};

}  // namespace sft
