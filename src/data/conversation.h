// A chat sample after reading and validation: an optional per-sample system message and turns
// that alternate user, assistant, ..., assistant, where an assistant turn may call tools (an
// assistant message with tool_calls, then one or more tool messages with the results, then the
// assistant again). normalize_messages() turns the raw (role name, text) list of any reader into
// this form or gives the reason the sample is invalid.
// Reference: FastChat train.py preprocess() role handling (fastchat-sft.md §1.2, ecosystem.md §4.7);
// HF chat-template tool use (transformers docs "Tool use": tool_calls, role "tool", tools).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sft {

enum class Role : uint8_t { system, user, assistant, tool };

// One function call made by an assistant message (HF: {"type": "function", "id"?, "function":
// {"name", "arguments"}}).
struct ToolCall {
  std::string name;
  std::string arguments;  // JSON text, key order as written (an object, or whatever the data had)
  std::string id;         // OpenAI's call id; empty when the data has none
};

struct Message {
  Role role;
  std::string content;                // may be empty for an assistant message with tool_calls
  std::vector<ToolCall> tool_calls = {};  // assistant only: the calls it makes
  std::string name = {};                  // tool only: the function whose result this is
  std::string tool_call_id = {};          // tool only: OpenAI's id of the call answered (may be empty)
};

struct Conversation {
  std::optional<std::string> system;  // overrides the template's system message when set
  std::vector<Message> messages;      // user, assistant, user, ..., assistant (never empty)
  std::string tools = {};             // the sample's tool list as JSON text ("[...]"); empty: none

  // Whether the sample calls tools (an assistant message with tool_calls, or a tool message).
  bool has_tool_messages() const;
};

// Why a sample is skipped; `kind` groups reasons in reports, `detail` names the message.
enum class IssueKind : uint8_t {
  invalid_json,        // the sample is not valid JSON (includes invalid UTF-8 and lone surrogates)
  invalid_utf8,        // a text field is not valid UTF-8
  bad_schema,          // missing or mistyped field ("conversations", "from", "value", ...)
  empty_conversation,  // no messages
  unknown_role,        // a role other than the known names and aliases
  system_position,     // a system message after the first message
  alternation,         // turns do not alternate user / assistant
  empty_message,       // a message with empty text
  ends_on_user,        // the last turn is a user turn: nothing to train on after it
  no_trainable_token,  // nothing trainable (left after truncation to model_max_length)
  template_split,      // the model's own chat template cannot be split into turns (it rewrites earlier ones)
  template_error,      // the model's own chat template raised an error on the sample (raise_exception, ...)
  tools_unsupported,   // tool calls / tool results with a template that cannot render them
  bad_tool_call,       // a function_call / tool_calls entry that is not {"name", "arguments"}
};
std::string_view issue_kind_name(IssueKind kind);

struct SampleIssue {
  int64_t index = -1;  // 0-based position of the sample in its file
  int64_t line = 0;    // 1-based line where the sample starts (0: unknown)
  IssueKind kind = IssueKind::invalid_json;
  std::string detail;  // "message 3: unknown role 'function_call'"
};

// Role names accepted in data files: human|user -> user; gpt|assistant|chatgpt|bard|bing|model ->
// assistant; system -> system; observation|tool -> tool. Case-sensitive, as FastChat. nullopt for
// anything else, which makes the sample invalid (unknown_role). The ShareGPT tool-call roles
// function_call|tool_call are assistant messages whose value is the call (is_tool_call_role()).
std::optional<Role> parse_role(std::string_view name);
bool is_tool_call_role(std::string_view name);

struct RawMessage {
  std::string role;  // as written in the file
  std::string content;
  std::vector<ToolCall> tool_calls = {};  // parsed by the reader (function_call value, OpenAI tool_calls)
  std::string name = {};                  // tool messages: the function name when the data gives it
  std::string tool_call_id = {};
};

struct NormalizeResult {
  std::optional<SampleIssue> issue;   // set when the sample is invalid (index left to the caller)
  bool dropped_leading_assistant = false;  // FastChat drops a first non-user turn; counted
};

// Validates and converts: a leading system message becomes `system` (it wins over a top-level
// "system"); a first assistant turn is dropped as FastChat does (and reported through the
// result); then turns must alternate user/assistant, be non-empty, valid UTF-8, end on assistant.
// Tool calls: an assistant message with tool_calls must be followed by one or more tool messages,
// then an assistant message (which may call tools again); a tool message follows a call or
// another tool message. A tool message without a name gets the name of the call it answers (the
// k-th tool message after a call message answers its k-th call, the last one when fewer).
NormalizeResult normalize_messages(std::vector<RawMessage>&& raw, std::optional<std::string> system,
                                   Conversation& out);

}  // namespace sft
