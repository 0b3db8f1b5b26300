// Fuzz target: the Jinja chat-template interpreter (data/jinja_lexer, jinja_parser, jinja_eval,
// jinja_builtins): the input is a template source, parsed and rendered against a fixed HF-style
// context (messages with a tool call, tools, special tokens, add_generation_prompt). Its own
// bounds (kMaxNesting, kMaxSteps, kMaxOutputBytes, kMaxCallDepth, kMaxRange, the work budget
// kWorkBase) must turn every runaway template into an sft::Error; generation spans must lie
// inside the output.
#include <nlohmann/json.hpp>

#include "data/jinja_eval.h"
#include "data/jinja_value.h"
#include "fuzz_util.h"

namespace {

const sft::jinja::Dict& context() {
  static const sft::jinja::Dict ctx = sft::jinja::Value::from_json(nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Hi there, é ✓ 😀"},
      {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}}]},
      {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "{\"t\": 21.5}"},
      {"role": "assistant", "content": "  It is 21.5 C.\n"}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "add_generation_prompt": true,
    "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": null
  })")).dict();
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  const std::string_view source = fuzz::as_text(data, size);
  fuzz::expect_clean([&] {
    const jinja::Template t(source, "fuzz_template");
    jinja::RenderOptions opts;
    opts.now = 1700000000;  // strftime_now(): deterministic
    const jinja::RenderResult r = t.render(context(), opts);
    if (r.text.size() > jinja::kMaxOutputBytes) std::abort();
    size_t last = 0;
    for (const auto& [b, e] : r.generation_spans) {
      if (b > e || e > r.text.size() || b < last) std::abort();  // spans in order, inside the text
      last = e;
    }
  });
  return 0;
}
