// Fuzz target: a model's own chat template as `--conversation_template auto` finds it
// (data/jinja_chat: tokenizer_config.json's chat_template, a string or a list of named templates,
// and its special tokens) rendered over fixed conversations (plain, system, tool calls) and split
// into trained segments. Input: tokenizer_config.json [===== chat_template.jinja]. Segments must
// concatenate to the template's whole rendering.
#include <filesystem>

#include "data/chat_template.h"
#include "data/conversation.h"
#include "data/jinja_chat.h"
#include "fuzz_util.h"

namespace {

using namespace sft;

std::vector<Conversation> conversations() {
  std::vector<Conversation> out;
  Conversation a;
  a.messages = {{Role::user, "Hello \xC3\xA9"}, {Role::assistant, " Hi!\n"}, {Role::user, "2+2?"}, {Role::assistant, "4"}};
  out.push_back(a);
  Conversation b = a;
  b.system = "Be brief.";
  out.push_back(b);
  Conversation c;
  c.messages = {{Role::user, "Weather in Paris?"},
                {Role::assistant, "", {{"get_weather", R"({"city": "Paris"})", "call_1"}}},
                {Role::tool, R"({"t": 21})", {}, "get_weather", "call_1"},
                {Role::assistant, "21 C."}};
  c.tools = R"([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}])";
  out.push_back(c);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Conversation> convs = conversations();
  const std::vector<std::string_view> parts = fuzz::split_parts(fuzz::as_text(data, size), 2);
  const std::string dir = fuzz::fresh_dir("chat_template");
  fuzz::write_file(dir + "/tokenizer_config.json", parts[0]);
  if (parts.size() > 1) fuzz::write_file(dir + "/chat_template.jinja", parts[1]);
  for (bool tools : {false, true}) {
    fuzz::expect_clean([&] {
      const ModelChatTemplate t = ModelChatTemplate::load(dir, tools);
      for (const Conversation& conv : convs) {
        std::string why;
        IssueKind kind;
        fuzz::expect_clean([&] {
          const auto segs = t.render_segments(conv, &why, &kind);
          if (!segs) return;
          std::string whole;
          for (const Segment& s : *segs) whole += s.text;
          const std::string want =
              t.render(ModelChatTemplate::messages_of(conv), ModelChatTemplate::tools_of(conv), false);
          if (whole != want) std::abort();
        });
      }
    });
  }
  return 0;
}
