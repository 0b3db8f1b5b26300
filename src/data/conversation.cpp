// Role names and conversation validation (see conversation.h). FastChat aborts on an unknown
// role or broken alternation; here each problem becomes a SampleIssue with the message number.
#include "data/conversation.h"

#include <fmt/format.h>

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
  };
  for (const Alias& a : kAliases)
    if (a.name == name) return a.role;
  return std::nullopt;
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
                        fmt::format("message {}: unknown role {} (known: human, user, gpt, assistant, system)", j,
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
  if (first < raw.size() && parse_role(raw[first].role) == Role::assistant) {
    ++first;
    res.dropped_leading_assistant = true;
  }
  if (first == raw.size()) {
    res.issue = issue(IssueKind::empty_conversation,
                      res.dropped_leading_assistant ? "no messages after the leading assistant turn" : "no messages");
    return res;
  }
  for (size_t j = first; j < raw.size(); ++j) {
    const Role want = (j - first) % 2 == 0 ? Role::user : Role::assistant;
    const Role got = *parse_role(raw[j].role);
    if (got != want) {
      res.issue = issue(IssueKind::alternation,
                        fmt::format("message {}: expected a {} turn, got {} (turns must alternate user, assistant)", j,
                                    want == Role::user ? "user" : "assistant", quoted(raw[j].role)));
      return res;
    }
    if (raw[j].content.empty()) {
      res.issue = issue(IssueKind::empty_message, fmt::format("message {}: empty {} message", j,
                                                              want == Role::user ? "user" : "assistant"));
      return res;
    }
    out.messages.push_back(Message{got, std::move(raw[j].content)});
  }
  if (out.messages.back().role == Role::user) {
    res.issue = issue(IssueKind::ends_on_user,
                      fmt::format("message {}: the conversation ends on a user turn", raw.size() - 1));
    out.messages.clear();
  }
  return res;
}

}  // namespace sft
