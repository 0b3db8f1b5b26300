// Conversation templates as FastChat's `Conversation` fields (one data table in chat_template.cpp)
// and their rendering into segments, each marked trainable or not; the segments concatenated are
// byte for byte FastChat's get_prompt() (fschat 0.2.36 conversation.py; llama-3 from FastChat
// HEAD). Trainable = each assistant message plus the end-of-turn text that closes it.
// Not here: tokenization (data/sample_encoder.h).
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "data/conversation.h"

namespace sft {

enum class TemplateStyle {
  add_colon_two,  // sys + sep, then role + ": " + msg + [sep, sep2][i % 2]
  llama2,         // "[INST] " (or sys), msg0 + " ", then tag + " " + msg + [sep, sep2][i % 2]
  llama3,         // "<|begin_of_text|>" [+ sys], then header(role) + msg.strip() + "<|eot_id|>"
  chatml,         // (sys + sep + "\n" unless sys == ""), then role + "\n" + msg + sep + "\n"
};

struct ChatTemplate {
  std::string_view name;
  TemplateStyle style;
  std::string_view system_template;  // "{system_message}" is replaced by the system message
  std::string_view system_message;   // the default; a sample's own system message replaces it
  std::string_view user_role, assistant_role;
  std::string_view sep, sep2;
  std::string_view eot;  // trained end-of-turn text after an assistant message (a prefix of its separator)
};

// The template called `name`; sft::Error listing the known names otherwise.
const ChatTemplate& find_template(std::string_view name);
std::vector<std::string_view> template_names();

struct Segment {
  std::string text;
  bool train = false;
};

// Renders `conv` (validated: user/assistant alternating, ending on assistant). Consecutive
// segments always differ in `train`; empty segments are left out.
std::vector<Segment> render_segments(const ChatTemplate& tmpl, const Conversation& conv);

// The concatenated text of render_segments().
std::string render_text(const ChatTemplate& tmpl, const Conversation& conv);

// Python str.strip(): leading and trailing Unicode whitespace removed (`s` valid UTF-8).
std::string_view py_strip(std::string_view s);

}  // namespace sft
