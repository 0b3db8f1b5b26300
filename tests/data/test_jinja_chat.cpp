// The model's own chat template (src/data/jinja_chat.h): HF's lookup precedence
// (chat_template.jinja, then tokenizer_config.json as a string or named list), the special tokens
// passed to the template, and trained segments found by prefix rendering (or {% generation %}):
// exact spans for ChatML (Qwen2.5), LLaMA-3 and Mistral, the rejection of a template that rewrites
// earlier turns, and a sweep of the fixture corpus where every accepted sample's segments
// concatenate to the template's rendering.
#include <gtest/gtest.h>

#include <thread>

#include "core/check.h"
#include "data/jinja_chat.h"
#include "data_test_util.h"

using namespace data_test;
using nlohmann::ordered_json;

namespace {

const fs::path kFixtures = fs::path(kRoot) / "tests/data/fixtures/jinja";

sft::Conversation hello(std::optional<std::string> system = std::nullopt) {
  sft::Conversation c;
  c.system = std::move(system);
  c.messages = {{sft::Role::user, "Hello!"},
                {sft::Role::assistant, "Hi!"},
                {sft::Role::user, "How are you?"},
                {sft::Role::assistant, "Fine."}};
  return c;
}

// A model directory with the given tokenizer_config.json and optional chat_template.jinja.
fs::path model_dir(const std::string& name, const ordered_json& config, const std::string& jinja_file = "") {
  const fs::path d = temp_dir(name);
  write_file(d / "tokenizer_config.json", config.dump(1));
  if (!jinja_file.empty()) write_file(d / "chat_template.jinja", jinja_file);
  return d;
}

sft::ModelChatTemplate fixture_template(const std::string& file, const std::string& bos, const std::string& eos) {
  sft::jinja::Dict tokens;
  tokens.set("bos_token", sft::jinja::Value(bos));
  tokens.set("eos_token", sft::jinja::Value(eos));
  const std::string path = (kFixtures / "templates" / file).string();
  return sft::ModelChatTemplate(sft::ChatTemplateSource{read_file(path), path}, std::move(tokens));
}

std::string trained(const std::vector<sft::Segment>& segs) {
  std::string out;
  for (const sft::Segment& s : segs)
    if (s.train) out += "[" + s.text + "]";
  return out;
}

std::string joined(const std::vector<sft::Segment>& segs) {
  std::string out;
  for (const sft::Segment& s : segs) out += s.text;
  return out;
}

TEST(ModelChatTemplate, FindsTemplateAsHf) {
  // A string in tokenizer_config.json.
  fs::path d = model_dir("ct-string", {{"chat_template", "A{{ messages|length }}"}});
  auto t = sft::find_chat_template(d.string());
  ASSERT_TRUE(t);
  EXPECT_EQ(t->text, "A{{ messages|length }}");
  EXPECT_NE(t->origin.find("tokenizer_config.json"), std::string::npos);
  // chat_template.jinja beside it wins.
  d = model_dir("ct-file", {{"chat_template", "A"}}, "B");
  EXPECT_EQ(sft::find_chat_template(d.string())->text, "B");
  // A list of named templates: default, or tool_use when tools are given, or by name.
  const ordered_json named = {{"chat_template",
                               {{{"name", "default"}, {"template", "D"}}, {{"name", "tool_use"}, {"template", "T"}}}}};
  d = model_dir("ct-list", named);
  EXPECT_EQ(sft::find_chat_template(d.string())->text, "D");
  EXPECT_EQ(sft::find_chat_template(d.string(), "", true)->text, "T");
  EXPECT_EQ(sft::find_chat_template(d.string(), "tool_use")->text, "T");
  EXPECT_THROW(sft::find_chat_template(d.string(), "rag"), sft::Error);
  d = model_dir("ct-list-nodefault", {{"chat_template", {{{"name", "x"}, {"template", "X"}}}}});
  EXPECT_THROW(sft::find_chat_template(d.string()), sft::Error);
  // No template: nullopt, and load() says what auto needs.
  d = model_dir("ct-none", {{"bos_token", "<s>"}});
  EXPECT_FALSE(sft::find_chat_template(d.string()));
  try {
    sft::ModelChatTemplate::load(d.string());
    FAIL() << "expected an error";
  } catch (const sft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--conversation_template auto needs the model's chat template"), std::string::npos)
        << e.what();
  }
}

TEST(ModelChatTemplate, PassesSpecialTokens) {
  const fs::path d = model_dir("ct-tokens", {{"chat_template", "{{ bos_token }}|{{ eos_token }}|{{ pad_token is defined }}"},
                                             {"bos_token", {{"content", "<s>"}, {"__type", "AddedToken"}}},
                                             {"eos_token", "</s>"}});
  const sft::ModelChatTemplate t = sft::ModelChatTemplate::load(d.string());
  EXPECT_EQ(t.render(ordered_json::array(), nullptr, false), "<s>|</s>|False");
}

TEST(ModelChatTemplate, SegmentsChatMlLlama3Mistral) {
  std::string why;
  const auto qwen = fixture_template("qwen2.5-7b-instruct.jinja", "", "<|im_end|>").render_segments(hello("Be brief."), &why);
  ASSERT_TRUE(qwen) << why;
  EXPECT_EQ(trained(*qwen), "[Hi!<|im_end|>][Fine.<|im_end|>]");  // the "\n" after <|im_end|> is not trained
  EXPECT_EQ(joined(*qwen),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi!"
            "<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\nFine.<|im_end|>\n");

  const auto llama3 = fixture_template("shared-llama3.jinja", "<|begin_of_text|>", "<|eot_id|>").render_segments(hello(), &why);
  ASSERT_TRUE(llama3) << why;
  EXPECT_EQ(trained(*llama3), "[Hi!<|eot_id|>][Fine.<|eot_id|>]");
  // Same text as the built-in llama-3 template.
  EXPECT_EQ(joined(*llama3), sft::render_text(sft::find_template("llama-3"), hello()));

  const auto mistral = fixture_template("mistral-7b-instruct-v0.1.jinja", "<s>", "</s>").render_segments(hello(), &why);
  ASSERT_TRUE(mistral) << why;
  EXPECT_EQ(trained(*mistral), "[Hi!</s>][Fine.</s>]");
  EXPECT_EQ(joined(*mistral), "<s>[INST] Hello! [/INST]Hi!</s> [INST] How are you? [/INST]Fine.</s> ");

  // Phi-3 writes eos_token only after the last message: trained with the last answer.
  const auto phi3 = fixture_template("phi-3-mini-instruct.jinja", "<s>", "<|endoftext|>").render_segments(hello(), &why);
  ASSERT_TRUE(phi3) << why;
  EXPECT_EQ(trained(*phi3), "[Hi!<|end|>][Fine.<|end|>\n<|endoftext|>]");
}

TEST(ModelChatTemplate, GenerationBlocksAreTheTrainedSpans) {
  const sft::ModelChatTemplate t(
      sft::ChatTemplateSource{"{% for m in messages %}{% if m.role == 'assistant' %}A: {% generation %}{{ m.content }}"
                              "<eot>{% endgeneration %}\n{% else %}U: {{ m.content }}\n{% endif %}{% endfor %}",
                              "inline"},
      {});
  std::string why;
  const auto segs = t.render_segments(hello(), &why);
  ASSERT_TRUE(segs) << why;
  EXPECT_EQ(trained(*segs), "[Hi!<eot>][Fine.<eot>]");
}

TEST(ModelChatTemplate, RejectsTemplatesThatRewriteEarlierTurns) {
  std::string why;
  // Mistral-Nemo moves the system prompt into the last user turn.
  EXPECT_FALSE(fixture_template("mistral-nemo-instruct-2407.jinja", "<s>", "</s>").render_segments(hello("S"), &why));
  // Qwen3 adds an empty <think> block only to answers after the last user turn.
  EXPECT_FALSE(fixture_template("qwen3-0.6b.jinja", "", "<|im_end|>").render_segments(hello(), &why));
  // Numbers turns from the end: every prefix renders the first turn differently.
  const sft::ModelChatTemplate t(
      sft::ChatTemplateSource{"{% for m in messages %}{{ messages|length - loop.index0 }}:{{ m.content }}\n{% endfor %}",
                              "countdown"},
      {});
  EXPECT_FALSE(t.render_segments(hello(), &why));
  EXPECT_NE(why.find("rewrites earlier turns"), std::string::npos) << why;
}

// Every fixture template over the fixture conversations without tool roles: accepted samples'
// segments concatenate to the rendering, and each trained span is non-empty.
TEST(ModelChatTemplate, CorpusSweep) {
  const ordered_json manifest = ordered_json::parse(read_file(kFixtures / "manifest.json"));
  const std::vector<sft::Conversation> convs = {hello(), hello("Be brief."), hello("")};
  int ok = 0, rejected = 0, raised = 0;
  std::string rejected_names;
  for (const auto& m : manifest) {
    const sft::ModelChatTemplate t =
        fixture_template(m["file"], m["bos_token"].get<std::string>(), m["eos_token"].get<std::string>());
    for (const sft::Conversation& c : convs) {
      std::string why;
      std::optional<std::vector<sft::Segment>> segs;
      try {
        segs = t.render_segments(c, &why);
      } catch (const sft::Error&) {  // raise_exception (e.g. no system role) or unsupported data
        ++raised;
        continue;
      }
      if (!segs) {
        ++rejected;
        if (rejected_names.find(m["file"].get<std::string>()) == std::string::npos) rejected_names += " " + m["file"].get<std::string>();
        continue;
      }
      ++ok;
      EXPECT_EQ(joined(*segs), t.render(sft::ModelChatTemplate::messages_of(c), nullptr, false)) << m["file"];
      int spans = 0;
      for (const sft::Segment& s : *segs) spans += s.train;
      EXPECT_EQ(spans, 2) << m["file"] << ": " << trained(*segs);
    }
  }
  std::cout << "[ sweep ] " << ok << " conversations split into segments, " << rejected
            << " rejected (template rewrites earlier turns:" << rejected_names << "), " << raised
            << " raised by the template\n";
  EXPECT_GT(ok, 50);
}

// The renderer the pipeline uses: a built-in name renders as before, "auto" with the model's.
TEST(ModelChatTemplate, ConversationRendererBuiltinOrAuto) {
  std::string why;
  const sft::ConversationRenderer builtin("chatml", "");
  EXPECT_FALSE(builtin.is_model_template());
  EXPECT_EQ(builtin.description(), "chatml");
  EXPECT_EQ(joined(*builtin.render_segments(hello(), &why)), sft::render_text(sft::find_template("chatml"), hello()));
  EXPECT_THROW(sft::ConversationRenderer("no-such-template", ""), sft::Error);

  const fs::path d = model_dir("renderer-auto", {{"chat_template", read_file(kFixtures / "templates/qwen2.5-7b-instruct.jinja")},
                                                 {"eos_token", "<|im_end|>"}});
  const sft::ConversationRenderer aut("auto", d.string());
  EXPECT_TRUE(aut.is_model_template());
  EXPECT_NE(aut.description().find("auto ("), std::string::npos);
  const auto segs = aut.render_segments(hello("Be brief."), &why);
  ASSERT_TRUE(segs) << why;
  EXPECT_EQ(trained(*segs), "[Hi!<|im_end|>][Fine.<|im_end|>]");
  EXPECT_THROW(sft::ConversationRenderer("auto", model_dir("renderer-none", {{"eos_token", "</s>"}}).string()), sft::Error);
}

// One template rendered from several threads at once (load_dataset renders samples in parallel)
// gives the same segments as one thread.
TEST(ModelChatTemplate, ConcurrentRendersAgree) {
  const sft::ModelChatTemplate t = fixture_template("llama-3.1-8b-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>");
  std::vector<sft::Conversation> convs;
  for (int i = 0; i < 64; ++i) {
    sft::Conversation c = hello(i % 3 ? std::optional<std::string>("sys " + std::to_string(i)) : std::nullopt);
    c.messages[1].content += std::to_string(i);
    convs.push_back(c);
  }
  auto render_all = [&]() {
    std::vector<std::string> out;
    std::string why;
    for (const sft::Conversation& c : convs) out.push_back(trained(*t.render_segments(c, &why)));
    return out;
  };
  const std::vector<std::string> want = render_all();
  std::vector<std::vector<std::string>> got(4);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < got.size(); ++k) threads.emplace_back([&, k] { got[k] = render_all(); });
  for (std::thread& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

}  // namespace
