// Role names and conversation validation (see conversation.h). FastChat aborts on an unknown
// role or broken alternation; here each problem becomes a SampleIssue with the message number.
#include "data/conversation.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "tokenizer/utf8.h"

namespace sft {

std::string_view issue_kind_name(IssueKind kind) {
  switch (kind) {
    case IssueKind::invalid_json: return "invalid JSON";
    case IssueKind::invalid_utf8: return "invalid UTF-8";
    case IssueKind::bad_schema: return "bad schema";
    case IssueKind::empty_conversation: return "empty conversation";
    case IssueKind::unknown_role: return "unknown role";
    case IssueKind::system_position: return "misplaced system message";
    case IssueKind::alternation: return "broken alternation";
    case IssueKind::empty_message: return "empty message";
    case IssueKind::ends_on_user: return "ends on a user turn";
    case IssueKind::no_trainable_token: return "no trainable token";
    case IssueKind::template_split: return "template cannot be split into turns";
    case IssueKind::template_error: return "chat template error";
    case IssueKind::tools_unsupported: return "template without tool support";
    case IssueKind::bad_tool_call: return "malformed tool call";
  }
  return "?";
}

std::optional<Role> parse_role(std::string_view name) {
  struct Alias {
    std::string_view name;
    Role role;
  };
  static constexpr Alias kAliases[] = {
      {"human", Role::user},          {"user", Role::user},       {"gpt", Role::assistant},
      {"assistant", Role::assistant}, {"chatgpt", Role::assistant}, {"bard", Role::assistant},
      {"bing", Role::assistant},      {"model", Role::assistant}, {"system", Role::system},
      {"function_call", Role::assistant}, {"tool_call", Role::assistant}, {"observation", Role::tool},
      {"tool", Role::tool},
  };
  for (const Alias& a : kAliases)
    if (a.name == name) return a.role;
  return std::nullopt;
}

bool is_tool_call_role(std::string_view name) { return name == "function_call" || name == "tool_call"; }

bool Conversation::has_tool_messages() const {
  for (const Message& m : messages)
    if (m.role == Role::tool || !m.tool_calls.empty()) return true;
  return false;
}

namespace {

SampleIssue issue(IssueKind kind, std::string detail) { return SampleIssue{-1, 0, kind, std::move(detail)}; }

std::string quoted(std::string_view s) {
  constexpr size_t kMax = 40;
  std::string out = s.size() > kMax ? std::string(s.substr(0, kMax)) + "..." : std::string(s);
  if (utf8::find_invalid(out) != std::string::npos) out = utf8::lossy(out);
  return "'" + out + "'";
}

}  // namespace

NormalizeResult normalize_messages(std::vector<RawMessage>&& raw, std::optional<std::string> system,
                                   Conversation& out) {
  NormalizeResult res;
  out.messages.clear();
  out.system.reset();
  if (system) {
    if (size_t bad = utf8::find_invalid(*system); bad != std::string::npos) {
      res.issue = issue(IssueKind::invalid_utf8, fmt::format("system: invalid UTF-8 at byte {}", bad));
      return res;
    }
    out.system = std::move(system);
  }
  if (raw.empty()) {
    res.issue = issue(IssueKind::empty_conversation, "no messages");
    return res;
  }
  // Message numbers in reports are positions in the file's list (0-based, as FastChat's j).
  size_t first = 0;
  for (size_t j = 0; j < raw.size(); ++j) {
    const RawMessage& m = raw[j];
    std::optional<Role> role = parse_role(m.role);
    if (!role) {
      res.issue = issue(IssueKind::unknown_role,
                        fmt::format("message {}: unknown role {} (known: human, user, gpt, assistant, system, "
                                    "function_call, tool_call, observation, tool)", j,
                                    quoted(m.role)));
      return res;
    }
    if (size_t bad = utf8::find_invalid(m.content); bad != std::string::npos) {
      res.issue = issue(IssueKind::invalid_utf8, fmt::format("message {}: invalid UTF-8 at byte {}", j, bad));
      return res;
    }
    if (*role == Role::system && j != 0) {
      res.issue = issue(IssueKind::system_position, fmt::format("message {}: a system message after the first message", j));
      return res;
    }
    if (*role == Role::system) first = 1;
  }
  if (first == 1) out.system = std::move(raw[0].content);
  // FastChat: `if roles[source[0]["from"]] != conv.roles[0]: source = source[1:]` (one message).
  if (first < raw.size() && parse_role(raw[first].role) == Role::assistant && !is_tool_call_role(raw[first].role) &&
      raw[first].tool_calls.empty()) {
    ++first;
    res.dropped_leading_assistant = true;
  }
  if (first == raw.size()) {
    res.issue = issue(IssueKind::empty_conversation,
                      res.dropped_leading_assistant ? "no messages after the leading assistant turn" : "no messages");
    return res;
  }
  // What may come next: after a user message an assistant one; after a plain assistant message a
  // user one; after an assistant message with tool calls a tool message; after a tool message
  // another tool message or the assistant.
  enum class Expect { user, assistant, tool, tool_or_assistant } expect = Expect::user;
  const auto expected_name = [](Expect e) -> std::string_view {
    switch (e) {
      case Expect::user: return "a user turn";
      case Expect::assistant: return "an assistant turn";
      case Expect::tool: return "a tool result (the previous message calls a tool)";
      case Expect::tool_or_assistant: return "a tool result or an assistant turn";
    }
    return "?";
  };
  size_t calls_at = SIZE_MAX;  // index in out.messages of the call message the tool messages answer
  size_t answered = 0;         // tool messages since that call message
  for (size_t j = first; j < raw.size(); ++j) {
    RawMessage& m = raw[j];
    const Role got = *parse_role(m.role);
    const bool ok = got == Role::user        ? expect == Expect::user
                    : got == Role::assistant ? expect == Expect::assistant || expect == Expect::tool_or_assistant
                    : got == Role::tool      ? expect == Expect::tool || expect == Expect::tool_or_assistant
                                             : false;
    if (!ok) {
      res.issue = issue(IssueKind::alternation,
                        fmt::format("message {}: expected {}, got {} (turns must alternate user, assistant; an "
                                    "assistant tool call is followed by tool results, then the assistant)",
                                    j, expected_name(expect), quoted(m.role)));
      return res;
    }
    if (got == Role::assistant && !m.tool_calls.empty()) {
      for (size_t k = 0; k < m.tool_calls.size(); ++k) {
        const ToolCall& c = m.tool_calls[k];
        for (const std::string* field : {&c.name, &c.arguments, &c.id})
          if (size_t bad = utf8::find_invalid(*field); bad != std::string::npos) {
            res.issue = issue(IssueKind::invalid_utf8, fmt::format("message {}: tool call {}: invalid UTF-8", j, k));
            return res;
          }
        if (c.name.empty()) {
          res.issue = issue(IssueKind::bad_tool_call, fmt::format("message {}: tool call {} has an empty name", j, k));
          return res;
        }
      }
    } else if (m.content.empty()) {
      res.issue = issue(IssueKind::empty_message,
                        fmt::format("message {}: empty {} message", j,
                                    got == Role::user ? "user" : got == Role::assistant ? "assistant" : "tool"));
      return res;
    }
    for (const std::string* field : {&m.name, &m.tool_call_id})
      if (size_t bad = utf8::find_invalid(*field); bad != std::string::npos) {
        res.issue = issue(IssueKind::invalid_utf8, fmt::format("message {}: invalid UTF-8 at byte {} of a name", j, bad));
        return res;
      }
    Message msg{got, std::move(m.content), std::move(m.tool_calls), std::move(m.name), std::move(m.tool_call_id)};
    if (got == Role::tool) {
      if (msg.name.empty() && calls_at != SIZE_MAX) {
        const std::vector<ToolCall>& calls = out.messages[calls_at].tool_calls;
        msg.name = calls[std::min(answered, calls.size() - 1)].name;
      }
      ++answered;
    }
    out.messages.push_back(std::move(msg));
    if (got == Role::user) {
      expect = Expect::assistant;
    } else if (got == Role::tool) {
      expect = Expect::tool_or_assistant;
    } else if (!out.messages.back().tool_calls.empty()) {
      expect = Expect::tool;
      calls_at = out.messages.size() - 1;
      answered = 0;
    } else {
      expect = Expect::user;
    }
  }
  if (out.messages.back().role == Role::user) {
    res.issue = issue(IssueKind::ends_on_user,
                      fmt::format("message {}: the conversation ends on a user turn", raw.size() - 1));
    out.messages.clear();
  } else if (out.messages.back().role == Role::tool) {
    res.issue = issue(IssueKind::alternation,
                      fmt::format("message {}: the conversation ends on a tool result (the assistant turn after it "
                                  "is missing)", raw.size() - 1));
    out.messages.clear();
  }
  return res;
}

}  // namespace sft
