// The template table and the four FastChat separator styles that the shipped templates use.
// Each rule below is FastChat's get_prompt() branch with the assistant message and its end of
// turn emitted as trainable segments; `chatml` has the fields of FastChat's qwen-7b-chat.
#include "data/chat_template.h"

#include "core/check.h"
#include "tokenizer/utf8.h"

namespace sft {

namespace {

constexpr std::string_view kVicunaSystem =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.";
constexpr std::string_view kAlpacaSystem =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";

using S = TemplateStyle;
// clang-format off
constexpr ChatTemplate kTemplates[] = {
//  name           style            system_template                                                          system_message                   user_role             assistant_role            sep          sep2          eot
  {"vicuna_v1.1", S::add_colon_two, "{system_message}",                                                      kVicunaSystem,                   "USER",               "ASSISTANT",              " ",         "</s>",       "</s>"},
  {"alpaca",      S::add_colon_two, "{system_message}",                                                      kAlpacaSystem,                   "### Instruction",    "### Response",           "\n\n",      "</s>",       "</s>"},
  {"llama-2",     S::llama2,        "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n",                         "",                              "[INST]",             "[/INST]",                " ",         " </s><s>",   " </s>"},
  {"mistral",     S::llama2,        "[INST] {system_message}\n",                                             "",                              "[INST]",             "[/INST]",                " ",         "</s>",       "</s>"},
  {"llama-3",     S::llama3,        "<|start_header_id|>system<|end_header_id|>\n\n{system_message}<|eot_id|>", "",                            "user",               "assistant",              "",          "",           "<|eot_id|>"},
  {"chatml",      S::chatml,        "<|im_start|>system\n{system_message}",                                  "You are a helpful assistant.",  "<|im_start|>user",   "<|im_start|>assistant",  "<|im_end|>", "",           "<|im_end|>"},
  {"zephyr",      S::chatml,        "<|system|>\n{system_message}",                                          "",                              "<|user|>",           "<|assistant|>",          "</s>",      "",           "</s>"},
};
// clang-format on

// Python str.format with the one field FastChat templates use.
std::string format_system(std::string_view tmpl, std::string_view message) {
  constexpr std::string_view kField = "{system_message}";
  std::string out(tmpl);
  if (size_t p = out.find(kField); p != std::string::npos) out.replace(p, kField.size(), message);
  return out;
}

}  // namespace

std::string_view py_strip(std::string_view s) {
  size_t b = 0;
  while (b < s.size()) {
    size_t i = b;
    if (!utf8::is_py_space(utf8::next(s, i))) break;
    b = i;
  }
  size_t e = s.size();
  while (e > b) {
    size_t start = e - 1;
    while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t i = start;
    if (!utf8::is_py_space(utf8::next(s, i))) break;
    e = start;
  }
  return s.substr(b, e - b);
}

namespace {

class SegmentBuilder {
 public:
  void add(std::string_view text, bool train) {
    if (text.empty()) return;
    if (segs_.empty() || segs_.back().train != train) segs_.push_back(Segment{std::string(), train});
    segs_.back().text += text;
  }
  std::vector<Segment> take() { return std::move(segs_); }

 private:
  std::vector<Segment> segs_;
};

}  // namespace

const ChatTemplate& find_template(std::string_view name) {
  for (const ChatTemplate& t : kTemplates)
    if (t.name == name) return t;
  std::string known;
  for (const ChatTemplate& t : kTemplates) known += (known.empty() ? "" : ", ") + std::string(t.name);
  fail("data", "unknown conversation template '{}' (known: {})", name, known);
}

std::vector<std::string_view> template_names() {
  std::vector<std::string_view> out;
  for (const ChatTemplate& t : kTemplates) out.push_back(t.name);
  return out;
}

std::vector<Segment> render_segments(const ChatTemplate& t, const Conversation& conv) {
  const std::string_view system_message = conv.system ? std::string_view(*conv.system) : t.system_message;
  const std::string system_prompt = format_system(t.system_template, system_message);
  SegmentBuilder b;
  switch (t.style) {
    case S::add_colon_two:
      b.add(system_prompt, false);
      b.add(t.sep, false);
      for (size_t i = 0; i < conv.messages.size(); ++i) {
        const std::string& m = conv.messages[i].content;
        if (i % 2 == 0) {
          b.add(t.user_role, false), b.add(": ", false), b.add(m, false), b.add(t.sep, false);
        } else {
          // The space after "ASSISTANT:" is trained: SentencePiece joins it to the first answer word.
          b.add(t.assistant_role, false), b.add(":", false);
          b.add(" ", true), b.add(m, true), b.add(t.eot, true), b.add(t.sep2.substr(t.eot.size()), false);
        }
      }
      break;
    case S::llama2:
      b.add(system_message.empty() ? std::string_view("[INST] ") : std::string_view(system_prompt), false);
      for (size_t i = 0; i < conv.messages.size(); ++i) {
        const std::string& m = conv.messages[i].content;
        if (i == 0) {
          b.add(m, false), b.add(" ", false);
        } else if (i % 2 == 0) {
          b.add(t.user_role, false), b.add(" ", false), b.add(m, false), b.add(t.sep, false);
        } else {
          b.add(t.assistant_role, false);
          b.add(" ", true), b.add(m, true), b.add(t.eot, true), b.add(t.sep2.substr(t.eot.size()), false);
        }
      }
      break;
    case S::llama3:
      b.add("<|begin_of_text|>", false);
      if (!system_message.empty()) b.add(system_prompt, false);
      for (size_t i = 0; i < conv.messages.size(); ++i) {
        const bool assistant = i % 2 == 1;
        b.add("<|start_header_id|>", false);
        b.add(assistant ? t.assistant_role : t.user_role, false);
        b.add("<|end_header_id|>\n\n", false);
        b.add(py_strip(conv.messages[i].content), assistant);
        b.add(t.eot, assistant);
      }
      break;
    case S::chatml:
      if (!system_prompt.empty()) b.add(system_prompt, false), b.add(t.sep, false), b.add("\n", false);
      for (size_t i = 0; i < conv.messages.size(); ++i) {
        const bool assistant = i % 2 == 1;
        b.add(assistant ? t.assistant_role : t.user_role, false), b.add("\n", false);
        b.add(conv.messages[i].content, assistant), b.add(t.sep, assistant), b.add("\n", false);
      }
      break;
  }
  return b.take();
}

std::string render_text(const ChatTemplate& tmpl, const Conversation& conv) {
  std::string out;
  for (const Segment& s : render_segments(tmpl, conv)) out += s.text;
  return out;
}

}  // namespace sft
