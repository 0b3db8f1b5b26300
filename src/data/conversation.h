// A chat sample after reading and validation: an optional per-sample system message and turns
// that alternate user, assistant, ..., assistant. normalize_messages() turns the raw (role name,
// text) list of any reader into this form or gives the reason the sample is invalid.
// Reference: FastChat train.py preprocess() role handling (fastchat-sft.md §1.2, ecosystem.md §4.7).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sft {

enum class Role : uint8_t { system, user, assistant };

struct Message {
  Role role;
  std::string content;
};

struct Conversation {
  std::optional<std::string> system;  // overrides the template's system message when set
  std::vector<Message> messages;      // user, assistant, user, ..., assistant (never empty)
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
};
std::string_view issue_kind_name(IssueKind kind);

struct SampleIssue {
  int64_t index = -1;  // 0-based position of the sample in its file
  int64_t line = 0;    // 1-based line where the sample starts (0: unknown)
  IssueKind kind = IssueKind::invalid_json;
  std::string detail;  // "message 3: unknown role 'function_call'"
};

// Role names accepted in data files: human|user -> user; gpt|assistant|chatgpt|bard|bing|model ->
// assistant; system -> system. Case-sensitive, as FastChat. nullopt for anything else (e.g.
// function_call, observation, tool), which makes the sample invalid (unknown_role).
std::optional<Role> parse_role(std::string_view name);

struct RawMessage {
  std::string role;  // as written in the file
  std::string content;
};

struct NormalizeResult {
  std::optional<SampleIssue> issue;   // set when the sample is invalid (index left to the caller)
  bool dropped_leading_assistant = false;  // FastChat drops a first non-user turn; counted
};

// Validates and converts: a leading system message becomes `system` (it wins over a top-level
// "system"); a first assistant turn is dropped as FastChat does (and reported through the
// result); then turns must alternate user/assistant, be non-empty, valid UTF-8, end on assistant.
NormalizeResult normalize_messages(std::vector<RawMessage>&& raw, std::optional<std::string> system,
                                   Conversation& out);

}  // namespace sft
