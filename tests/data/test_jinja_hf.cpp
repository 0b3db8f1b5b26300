// Differential tests against HF transformers itself (issue 15 item 5): every real chat template
// of tests/data/fixtures/jinja × the fixture conversations × add_generation_prompt both ways,
// rendered by tokenizer.apply_chat_template(..., tokenize=False) of a current transformers
// (.venv-template, scripts/setup_template_venv.sh; tests/data/hf_apply_chat_template.py) and by
// sft's ModelChatTemplate::render, byte for byte; for templates with {% generation %} blocks,
// HF's assistant spans (render_jinja_template with return_assistant_tokens_mask) against sft's
// generation spans and the trained segments of render_segments. Skipped visibly without the venv.
#include <gtest/gtest.h>

#include <map>
#include <regex>

#include "core/check.h"
#include "data/jinja_chat.h"
#include "data_test_util.h"

using namespace data_test;
using nlohmann::ordered_json;

namespace {

const fs::path kFixtures = fs::path(kRoot) / "tests/data/fixtures/jinja";
const std::string kHfPython = kRoot + "/.venv-template/bin/python";
const std::string kHfScript = kRoot + "/tests/data/hf_apply_chat_template.py";

// The transformers version of .venv-template, or "" when it is absent or broken.
const std::string& hf_version() {
  static const std::string version = [] {
    if (!fs::exists(kHfPython)) return std::string();
    RunResult r = run("timeout 120 " + kHfPython + " " + kHfScript + " --version 2>/dev/null");
    if (r.code != 0) return std::string();
    while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == '\r')) r.out.pop_back();
    return r.out;
  }();
  return version;
}

#define REQUIRE_HF()                                                                                   \
  if (hf_version().empty())                                                                            \
  GTEST_SKIP() << "no .venv-template with transformers (bash scripts/setup_template_venv.sh): HF "     \
                  "apply_chat_template comparison skipped"

struct Corpus {
  std::vector<std::string> names, templates;
  ordered_json manifest, conversations;
};

Corpus load_corpus() {
  Corpus c;
  c.manifest = ordered_json::parse(read_file(kFixtures / "manifest.json"));
  c.conversations = ordered_json::parse(read_file(kFixtures / "conversations.json"));
  for (const auto& m : c.manifest) {
    c.names.push_back(m["file"].get<std::string>());
    c.templates.push_back(read_file(kFixtures / "templates" / m["file"].get<std::string>()));
  }
  return c;
}

struct HfCase {
  std::string label;
  size_t template_index;
  ordered_json messages, tools;
  bool add_generation_prompt;
};

// Runs the HF script over all cases (one python process, bounded); one result per case.
ordered_json run_hf(const Corpus& corpus, const std::vector<HfCase>& cases, const std::string& name) {
  // No fixed time: ModelChatTemplate::render formats strftime_now() with the current time, as HF.
  ordered_json req = {{"templates", corpus.templates}, {"cases", ordered_json::array()}};
  for (const HfCase& c : cases)
    req["cases"].push_back({{"template", c.template_index},
                            {"messages", c.messages},
                            {"tools", c.tools},
                            {"add_generation_prompt", c.add_generation_prompt},
                            {"bos_token", corpus.manifest[c.template_index]["bos_token"]},
                            {"eos_token", corpus.manifest[c.template_index]["eos_token"]}});
  const fs::path dir = temp_dir("jinja_hf_" + name);
  write_file(dir / "request.json", req.dump());
  const RunResult r = run("timeout 300 " + kHfPython + " " + kHfScript + " " + (dir / "request.json").string() + " > " +
                          (dir / "expected.json").string());
  EXPECT_EQ(r.code, 0) << r.out;
  if (r.code != 0) return ordered_json::array();
  return ordered_json::parse(read_file(dir / "expected.json"));
}

sft::ModelChatTemplate model_template(const Corpus& corpus, size_t t) {
  sft::jinja::Dict special;
  special.set("bos_token", sft::jinja::Value(corpus.manifest[t]["bos_token"].get<std::string>()));
  special.set("eos_token", sft::jinja::Value(corpus.manifest[t]["eos_token"].get<std::string>()));
  return sft::ModelChatTemplate(sft::ChatTemplateSource{corpus.templates[t], corpus.names[t]}, special);
}

// Compares sft's render with HF's for every case: the same text, or both failing. Returns the
// number equal per template and fills `report` with the first disagreements.
std::map<std::string, std::pair<int, int>> compare(const Corpus& corpus, const std::vector<HfCase>& cases,
                                                   const ordered_json& expected, std::string* report) {
  std::map<std::string, std::pair<int, int>> per_template;  // name -> (equal, total)
  std::vector<std::optional<sft::ModelChatTemplate>> compiled(corpus.templates.size());
  std::vector<std::string> parse_error(corpus.templates.size());
  for (size_t t = 0; t < corpus.templates.size(); ++t) {
    try {
      compiled[t].emplace(model_template(corpus, t));
    } catch (const sft::Error& e) {
      parse_error[t] = e.what();
    }
  }
  for (size_t i = 0; i < cases.size() && i < expected.size(); ++i) {
    const HfCase& c = cases[i];
    const ordered_json& want = expected[i];
    std::string got, got_error = parse_error[c.template_index];
    if (compiled[c.template_index]) {
      try {
        got = compiled[c.template_index]->render(c.messages, c.tools, c.add_generation_prompt);
      } catch (const sft::Error& e) {
        got_error = e.what();
      }
    }
    const bool want_error = want.contains("error");
    const bool ok = (want_error || !got_error.empty()) ? (want_error && !got_error.empty())
                                                       : want["text"].get<std::string>() == got;
    auto& [equal, total] = per_template[corpus.names[c.template_index]];
    equal += ok;
    ++total;
    if (!ok && report->size() < 6000)
      *report += "\n--- " + c.label + "\n  HF:  " + (want_error ? "error " + want["error"].get<std::string>() : want["text"].dump()) +
                 "\n  sft: " + (got_error.empty() ? ordered_json(got).dump() : "error " + got_error);
  }
  return per_template;
}

// The corpus cases: every template × conversation × add_generation_prompt. With `openai_nulls`,
// only the conversations with tool calls, each assistant message that has tool_calls and no
// content given "content": null, as the OpenAI API writes them.
std::vector<HfCase> corpus_cases(const Corpus& corpus, bool openai_nulls) {
  std::vector<HfCase> cases;
  for (size_t t = 0; t < corpus.templates.size(); ++t)
    for (const auto& conv : corpus.conversations) {
      ordered_json messages = conv["messages"];
      if (openai_nulls) {
        bool any = false;
        for (auto& m : messages)
          if (m.contains("tool_calls") && !m.contains("content")) {
            m["content"] = nullptr;
            any = true;
          }
        if (!any) continue;
      }
      for (bool agp : {false, true})
        cases.push_back(HfCase{corpus.names[t] + " / " + conv["name"].get<std::string>() +
                                   " / add_generation_prompt=" + (agp ? "true" : "false"),
                               t, messages, conv.contains("tools") ? conv["tools"] : ordered_json(nullptr), agp});
    }
  return cases;
}

}  // namespace

// The corpus × the fixture conversations (system, empty system, multi-turn, unicode, ending on a
// user turn, glaive tool calls with tools) × add_generation_prompt both ways. The fixtures have
// no null-valued keys (nor does ModelChatTemplate::messages_of write any).
TEST(JinjaVsHf, RealTemplatesApplyChatTemplate) {
  REQUIRE_HF();
  const Corpus corpus = load_corpus();
  ASSERT_GE(corpus.templates.size(), 20u);
  const std::vector<HfCase> cases = corpus_cases(corpus, false);
  const ordered_json expected = run_hf(corpus, cases, "corpus");
  ASSERT_EQ(expected.size(), cases.size());
  std::string report;
  const auto per_template = compare(corpus, cases, expected, &report);
  int equal = 0, total = 0, hf_errors = 0;
  for (const auto& e : expected) hf_errors += e.contains("error");
  for (const auto& [name, counts] : per_template) {
    std::cout << "[ HF " << hf_version() << " ] " << name << ": " << counts.first << "/" << counts.second << "\n";
    equal += counts.first;
    total += counts.second;
  }
  std::cout << "[ HF " << hf_version() << " ] " << equal << "/" << total << " equal to apply_chat_template over "
            << corpus.templates.size() << " templates x " << corpus.conversations.size()
            << " conversations x 2 (" << hf_errors << " raised by the template on both sides)\n";
  EXPECT_EQ(equal, total) << report;
}

// Messages with "content": null beside tool_calls (as OpenAI writes them): transformers >= 5
// drops null-valued message keys before rendering (chat_template_utils._normalize_chat_messages),
// so ModelChatTemplate::render, which takes HF message dicts, must render them as HF does.
TEST(JinjaVsHf, NullValuedMessageKeysAsHf) {
  REQUIRE_HF();
  const Corpus corpus = load_corpus();
  const std::vector<HfCase> cases = corpus_cases(corpus, true);
  ASSERT_FALSE(cases.empty()) << "no fixture conversation with tool calls";
  const ordered_json expected = run_hf(corpus, cases, "nulls");
  ASSERT_EQ(expected.size(), cases.size());
  std::string report;
  int equal = 0, total = 0;
  for (const auto& [name, counts] : compare(corpus, cases, expected, &report)) {
    equal += counts.first;
    total += counts.second;
  }
  std::cout << "[ HF " << hf_version() << " ] messages with null-valued keys: " << equal << "/" << total << " equal\n";
  EXPECT_EQ(equal, total) << report;
}

// Templates with {% generation %} blocks: HF's assistant spans (the character ranges its
// return_assistant_tokens_mask marks tokens from, here as UTF-8 byte offsets) equal sft's
// generation spans of the same render, and they are exactly the trained segments of
// render_segments (the data pipeline's mask before tokenization).
TEST(JinjaVsHf, GenerationSpansAreHfAssistantMasks) {
  REQUIRE_HF();
  const Corpus corpus = load_corpus();
  const std::regex kGenerationTag(R"(\{%[-+]?\s*generation\s*[-+]?%\})");  // HF's test for the tag
  std::vector<HfCase> cases;
  for (size_t t = 0; t < corpus.templates.size(); ++t) {
    if (!std::regex_search(corpus.templates[t], kGenerationTag)) continue;
    for (const auto& conv : corpus.conversations)
      if (!conv.contains("tools"))
        cases.push_back(HfCase{corpus.names[t] + " / " + conv["name"].get<std::string>(), t,
                               conv["messages"], nullptr, false});
  }
  ASSERT_FALSE(cases.empty()) << "no template with {% generation %} in the corpus";
  const ordered_json expected = run_hf(corpus, cases, "generation");
  ASSERT_EQ(expected.size(), cases.size());
  int checked = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const HfCase& c = cases[i];
    SCOPED_TRACE(c.label);
    if (expected[i].contains("error")) continue;
    ASSERT_TRUE(expected[i].value("generation_text_equal", false));
    const std::string text = expected[i]["text"];
    // sft's generation spans of the same render.
    ordered_json ctx = {{"messages", c.messages},     {"tools", nullptr},
                        {"documents", nullptr},       {"add_generation_prompt", false},
                        {"bos_token", corpus.manifest[c.template_index]["bos_token"]},
                        {"eos_token", corpus.manifest[c.template_index]["eos_token"]}};
    const auto res =
        sft::jinja::Template(corpus.templates[c.template_index]).render(sft::jinja::Value::from_json(ctx).dict());
    ASSERT_EQ(res.text, text);
    ordered_json spans = ordered_json::array();
    for (const auto& [b, e] : res.generation_spans) spans.push_back({b, e});
    EXPECT_EQ(spans, expected[i]["generation"]);
    // The trained segments of render_segments, as byte spans of the text.
    sft::Conversation conv;
    for (const auto& m : c.messages) {
      const std::string role = m["role"];
      if (role == "system") conv.system = m["content"].get<std::string>();
      else conv.messages.push_back(sft::Message{role == "user" ? sft::Role::user : sft::Role::assistant, m["content"]});
    }
    if (conv.messages.empty() || conv.messages.back().role != sft::Role::assistant) continue;
    std::string why;
    const auto segments = model_template(corpus, c.template_index).render_segments(conv, &why);
    ASSERT_TRUE(segments.has_value()) << why;
    ordered_json trained = ordered_json::array();
    std::string joined;
    for (const auto& s : *segments) {
      if (s.train) trained.push_back({joined.size(), joined.size() + s.text.size()});
      joined += s.text;
    }
    EXPECT_EQ(joined, text);
    EXPECT_EQ(trained, expected[i]["generation"]);
    ++checked;
  }
  std::cout << "[ HF " << hf_version() << " ] {% generation %} spans equal to HF's assistant masks in " << checked
            << " conversations\n";
  EXPECT_GT(checked, 0);
}
