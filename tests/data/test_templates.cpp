// Template rendering: the strings of fastchat-sft.md §3.2-3.3 for [Hello!, Hi!, How are you?,
// Fine.], the trainable segments, and byte equality with FastChat's get_prompt() (fschat 0.2.36,
// via tools/fastchat_reference.py render) on every dummy conversation, with the template's system
// message and with a per-sample one.
#include <gtest/gtest.h>

#include "core/check.h"
#include "data/chat_template.h"
#include "data/sample_reader.h"
#include "data_test_util.h"

using namespace data_test;

namespace {

sft::Conversation hello(std::optional<std::string> system = std::nullopt) {
  sft::Conversation c;
  c.system = std::move(system);
  c.messages = {{sft::Role::user, "Hello!"},
                {sft::Role::assistant, "Hi!"},
                {sft::Role::user, "How are you?"},
                {sft::Role::assistant, "Fine."}};
  return c;
}

std::string render(std::string_view name, std::optional<std::string> system = std::nullopt) {
  return sft::render_text(sft::find_template(name), hello(std::move(system)));
}

std::string trained(std::string_view name) {
  std::string out;
  for (const sft::Segment& s : sft::render_segments(sft::find_template(name), hello()))
    if (s.train) out += "[" + s.text + "]";
  return out;
}

TEST(Templates, VicunaExact) {
  EXPECT_EQ(render("vicuna_v1.1"),
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the user's questions. USER: Hello! ASSISTANT: Hi!</s>USER: How are "
            "you? ASSISTANT: Fine.</s>");
  EXPECT_EQ(trained("vicuna_v1.1"), "[ Hi!</s>][ Fine.</s>]");
  EXPECT_EQ(render("vicuna_v1.1", "SYS"), "SYS USER: Hello! ASSISTANT: Hi!</s>USER: How are you? ASSISTANT: Fine.</s>");
}

TEST(Templates, OthersExact) {
  EXPECT_EQ(render("alpaca"),
            "Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction: Hello!\n\n### Response: Hi!</s>### Instruction: How are you?\n\n### "
            "Response: Fine.</s>");
  EXPECT_EQ(render("llama-2"), "[INST] Hello! [/INST] Hi! </s><s>[INST] How are you? [/INST] Fine. </s><s>");
  EXPECT_EQ(trained("llama-2"), "[ Hi! </s>][ Fine. </s>]");
  EXPECT_EQ(render("llama-2", "SYS"),
            "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nHello! [/INST] Hi! </s><s>[INST] How are you? [/INST] Fine. </s><s>");
  EXPECT_EQ(render("mistral"), "[INST] Hello! [/INST] Hi!</s>[INST] How are you? [/INST] Fine.</s>");
  EXPECT_EQ(render("llama-3"),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>"
            "assistant<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow are "
            "you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nFine.<|eot_id|>");
  EXPECT_EQ(trained("llama-3"), "[Hi!<|eot_id|>][Fine.<|eot_id|>]");
  EXPECT_TRUE(render("llama-3", "SYS").starts_with(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|><|start_header_id|>user"));
  EXPECT_EQ(render("chatml"),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
            "<|im_start|>assistant\nHi!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n"
            "Fine.<|im_end|>\n");
  EXPECT_EQ(trained("chatml"), "[Hi!<|im_end|>][Fine.<|im_end|>]");
  EXPECT_EQ(render("zephyr"),
            "<|system|>\n</s>\n<|user|>\nHello!</s>\n<|assistant|>\nHi!</s>\n<|user|>\nHow are you?</s>\n"
            "<|assistant|>\nFine.</s>\n");
}

TEST(Templates, Llama3StripsMessages) {
  sft::Conversation c;
  c.messages = {{sft::Role::user, " \tHello!\n"}, {sft::Role::assistant, "\u3000Hi!  "}};
  EXPECT_EQ(sft::render_text(sft::find_template("llama-3"), c),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>"
            "assistant<|end_header_id|>\n\nHi!<|eot_id|>");
}

TEST(Templates, UnknownNameListsKnown) {
  try {
    sft::find_template("vicuna");
    FAIL() << "no error";
  } catch (const sft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("known: vicuna_v1.1, alpaca, llama-2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(sft::template_names().size(), 7u);
}

TEST(Templates, SegmentsAlternateAndConcatenate) {
  for (std::string_view name : sft::template_names()) {
    const auto segs = sft::render_segments(sft::find_template(name), hello("S"));
    std::string text;
    for (size_t i = 0; i < segs.size(); ++i) {
      EXPECT_FALSE(segs[i].text.empty()) << name;
      if (i) {
        EXPECT_NE(segs[i].train, segs[i - 1].train) << name;
      }
      text += segs[i].text;
    }
    EXPECT_EQ(text, render(name, "S")) << name;
  }
}

TEST(Templates, EqualToFastChatGetPrompt) {
  if (!fs::exists(kPython)) GTEST_SKIP() << "no test virtualenv (" << kPython << "): run scripts/setup_venv.sh";
  if (run(kPython + " -c 'import fastchat'").code != 0) GTEST_SKIP() << "fschat is not installed in the test virtualenv";
  const fs::path out = temp_dir("render") / "render.jsonl";
  RunResult r = run(kPython + " " + kRoot + "/tools/fastchat_reference.py render --data " + dummy_data() + " --out " +
                    out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  sft::SampleFile file(dummy_data());
  int64_t checked = 0;
  for (const nlohmann::json& rec : read_jsonl(out)) {
    sft::Conversation conv;
    ASSERT_FALSE(sft::parse_sample(file.text(rec["index"]), sft::DataFormat::sharegpt, conv).issue);
    if (!rec["system"].is_null()) conv.system = rec["system"].get<std::string>();
    const std::string name = rec["template"];
    ASSERT_EQ(sft::render_text(sft::find_template(name), conv), rec["text"].get<std::string>())
        << name << " sample " << rec["index"];
    ++checked;
  }
  std::printf("[ render ] %lld renderings equal to FastChat's get_prompt() (6 templates x 500 samples x 2 system "
              "messages; llama-3 is not in fschat 0.2.36)\n", (long long)checked);
  EXPECT_EQ(checked, 6000);
}

}  // namespace
