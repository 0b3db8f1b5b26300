// Tool-calling conversations (issue 15 item 4): ShareGPT function_call / observation roles and a
// sample's tools string (the glaive excerpt in assets/data), OpenAI-style tool_calls / role tool,
// validation of the call -> result -> answer order, rendering with a model's own template that
// supports tools (Qwen2.5, LLaMA-3.1, Hermes-2-Pro: the whole rendering equals Jinja2's), trained spans
// (answers and tool calls with their end of turn, never the tool results), and the samples a
// template cannot render (built-in templates, model templates that leave tool calls out) counted
// with the reason.
#include <gtest/gtest.h>

#include <fstream>
#include <iostream>

#include "core/check.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/jinja_chat.h"
#include "data/sample_reader.h"
#include "data_test_util.h"
#include "tokenizer/tokenizer.h"

using namespace data_test;
using nlohmann::ordered_json;

namespace {

const fs::path kFixtures = fs::path(kRoot) / "tests/data/fixtures/jinja";
const std::string kGlaive = kRoot + "/assets/data/glaive_toolcall_en_demo_30.json";

// A copy of the shipped LLaMA-2 tokenizer whose tokenizer_config.json carries `chat_template`
// (a string, or a list of named templates).
fs::path model_with_template(const std::string& name, const ordered_json& chat_template) {
  const fs::path dir = temp_dir("tool_calls_" + name);
  for (const char* f : {"tokenizer.model", "special_tokens_map.json"})
    fs::copy_file(fs::path(kLlama2) / f, dir / f, fs::copy_options::overwrite_existing);
  ordered_json cfg = ordered_json::parse(read_file(fs::path(kLlama2) / "tokenizer_config.json"));
  cfg["chat_template"] = chat_template;
  write_file(dir / "tokenizer_config.json", cfg.dump(2));
  return dir;
}

std::string fixture(const std::string& file) { return read_file(kFixtures / "templates" / file); }

sft::Dataset load(const fs::path& model, const std::string& data_path, const std::string& tmpl = "auto") {
  auto tok = sft::load_tokenizer(model.string());
  sft::DataOptions opt;
  opt.conversation_template = tmpl;
  opt.model_dir = model.string();
  opt.model_max_length = 4096;
  return sft::load_dataset(data_path, *tok, opt);
}

std::string data_file(const std::string& name, const std::string& text) {
  const fs::path p = temp_dir("tool_calls_data_" + name) / "data.json";
  write_file(p, text);
  return p.string();
}

// The decoded text of each run of trained tokens of dataset row r.
std::vector<std::string> trained_spans(const sft::Dataset& ds, int64_t r, const sft::Tokenizer& tok) {
  std::vector<std::string> out;
  const auto ids = ds.ids(r);
  const auto train = ds.train(r);
  for (size_t t = 0; t < ids.size();) {
    if (!train[t]) {
      ++t;
      continue;
    }
    size_t e = t;
    while (e < ids.size() && train[e]) ++e;
    out.push_back(tok.decode(ids.subspan(t, e - t)));
    t = e;
  }
  return out;
}

// Python's json.dumps(v, ensure_ascii=False) (separators ", " and ": "): what tojson prints.
std::string py_dumps(const ordered_json& v) {
  if (v.is_object()) {
    std::string out = "{";
    for (auto it = v.begin(); it != v.end(); ++it)
      out += (it == v.begin() ? "" : ", ") + ordered_json(it.key()).dump() + ": " + py_dumps(it.value());
    return out + "}";
  }
  if (v.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + py_dumps(v[i]);
    return out + "]";
  }
  return v.dump();
}

sft::Conversation parse(const std::string& json, sft::DataFormat fmt, std::optional<sft::SampleIssue>* issue = nullptr) {
  sft::Conversation conv;
  sft::ParsedSample p = sft::parse_sample(json, fmt, conv);
  if (issue) *issue = p.issue;
  else EXPECT_FALSE(p.issue) << p.issue->detail;
  return conv;
}

sft::ModelChatTemplate fixture_template(const std::string& file, const std::string& bos, const std::string& eos) {
  sft::jinja::Dict tokens;
  tokens.set("bos_token", sft::jinja::Value(bos));
  tokens.set("eos_token", sft::jinja::Value(eos));
  const std::string path = (kFixtures / "templates" / file).string();
  return sft::ModelChatTemplate(sft::ChatTemplateSource{read_file(path), path}, std::move(tokens));
}

std::string joined(const std::vector<sft::Segment>& segs) {
  std::string out;
  for (const sft::Segment& s : segs) out += s.text;
  return out;
}

// A python3 that imports jinja2 (the test virtualenv's first), or "" when there is none.
const std::string& jinja_python() {
  static const std::string python = [] {
    for (const std::string& p : {kPython, std::string("python3")}) {
      if (p == kPython && !fs::exists(kPython)) continue;
      if (run(p + " " + kRoot + "/tests/data/jinja_reference.py --version").code == 0) return p;
    }
    return std::string();
  }();
  return python;
}

}  // namespace

// The ShareGPT mapping: function_call -> assistant tool_calls (arguments an object, key order
// kept), observation -> tool with the called function's name, tools string -> list of
// {"type": "function", "function": spec}; the same as the fixtures' glaive conversations
// (tests/data/fixtures/jinja/conversations.json, converted by hand as the README documents).
TEST(ToolCalls, ShareGptMappingMatchesTheFixtures) {
  const ordered_json data = ordered_json::parse(read_file(kGlaive));
  const ordered_json convs = ordered_json::parse(read_file(kFixtures / "conversations.json"));
  int checked = 0;
  for (const ordered_json& c : convs) {
    const std::string name = c["name"];
    if (!name.starts_with("glaive_")) continue;
    const size_t index = std::stoul(name.substr(7));
    ASSERT_LT(index, data.size());
    const sft::Conversation conv = parse(data[index].dump(), sft::DataFormat::sharegpt);
    EXPECT_EQ(sft::ModelChatTemplate::messages_of(conv).dump(), c["messages"].dump()) << name;
    EXPECT_EQ(sft::ModelChatTemplate::tools_of(conv).dump(), c["tools"].dump()) << name;
    EXPECT_TRUE(conv.has_tool_messages());
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

// The excerpt through load_dataset with Qwen2.5's template on the LLaMA-2 tokenizer: every sample
// kept; the trained spans are exactly each answer and each tool call as the template writes it,
// plus <|im_end|>; tool results are in the sample but never trained.
TEST(ToolCalls, GlaiveExcerptTrainsAnswersAndCallsNotResults) {
  const fs::path model = model_with_template("qwen25", fixture("qwen2.5-7b-instruct.jinja"));
  const sft::Dataset ds = load(model, kGlaive);
  const ordered_json data = ordered_json::parse(read_file(kGlaive));
  ASSERT_EQ(data.size(), 30u);
  EXPECT_EQ(ds.stats().samples, 30);
  EXPECT_EQ(ds.stats().invalid, 0);
  ASSERT_EQ(ds.size(), 30);
  for (const sft::SampleIssue& i : ds.issues()) ADD_FAILURE() << sft::describe_issue(ds.path(), i);
  auto tok = sft::load_tokenizer(model.string());
  int calls = 0, results = 0;
  for (int64_t r = 0; r < ds.size(); ++r) {
    const ordered_json& sample = data[static_cast<size_t>(ds.source_index(r))];
    std::vector<std::string> want;
    std::vector<std::string> observations;
    for (const ordered_json& m : sample["conversations"]) {
      const std::string from = m["from"], value = m["value"];
      if (from == "gpt") {
        want.push_back(value + "<|im_end|>");
      } else if (from == "function_call") {
        const ordered_json call = ordered_json::parse(value);
        want.push_back("<tool_call>\n{\"name\": \"" + call["name"].get<std::string>() + "\", \"arguments\": " +
                       py_dumps(call["arguments"]) + "}\n</tool_call><|im_end|>");
        ++calls;
      } else if (from == "observation") {
        observations.push_back(value);
      }
    }
    const std::vector<std::string> got = trained_spans(ds, r, *tok);
    EXPECT_EQ(got, want) << "sample " << ds.source_index(r);
    const std::string whole = tok->decode(ds.ids(r));
    for (const std::string& o : observations) {
      EXPECT_NE(whole.find("<tool_response>\n" + o + "\n</tool_response>"), std::string::npos) << "sample " << ds.source_index(r);
      for (const std::string& t : got) EXPECT_EQ(t.find(o), std::string::npos) << "tool result trained: sample " << ds.source_index(r);
      ++results;
    }
  }
  EXPECT_EQ(calls, 22);  // 15 samples call tools, some twice or three times
  EXPECT_EQ(results, calls);
}

// LLaMA-3.1 writes a call as {"name": N, "parameters": A} in an assistant turn and a result as an
// ipython turn printed with tojson: trained are the calls and answers (trimmed, as the template
// trims them) with <|eot_id|>; the results are rendered (as JSON strings) and never trained.
TEST(ToolCalls, Llama31TrainsCallsNotResults) {
  const sft::ModelChatTemplate tmpl = fixture_template("llama-3.1-8b-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>");
  const ordered_json data = ordered_json::parse(read_file(kGlaive));
  int samples = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    const sft::Conversation conv = parse(data[i].dump(), sft::DataFormat::sharegpt);
    if (!conv.has_tool_messages()) continue;
    std::string why;
    const auto segs = tmpl.render_segments(conv, &why);
    ASSERT_TRUE(segs) << "sample " << i << ": " << why;
    std::vector<std::string> want, got;
    for (const ordered_json& m : data[i]["conversations"]) {
      const std::string from = m["from"], value = m["value"];
      if (from == "gpt") want.push_back(std::string(sft::py_strip(value)) + "<|eot_id|>");
      if (from == "function_call") {
        const ordered_json call = ordered_json::parse(value);
        want.push_back("{\"name\": \"" + call["name"].get<std::string>() + "\", \"parameters\": " +
                       py_dumps(call["arguments"]) + "}<|eot_id|>");
      }
    }
    std::string untrained;
    for (const sft::Segment& s : *segs) (s.train ? got.push_back(s.text) : void(untrained += s.text));
    EXPECT_EQ(got, want) << "sample " << i;
    for (const ordered_json& m : data[i]["conversations"]) {
      if (m["from"] != "observation") continue;
      const std::string result = "<|start_header_id|>ipython<|end_header_id|>\n\n" + ordered_json(m["value"]).dump() + "<|eot_id|>";
      EXPECT_NE(untrained.find(result), std::string::npos) << "sample " << i;
    }
    ++samples;
  }
  EXPECT_EQ(samples, 15);
}

// The rendering sft trains on is what Jinja2 renders for the same messages and tools, for the
// tool-capable templates of the fixture corpus, over every sample of the excerpt.
TEST(ToolCalls, RenderingEqualsJinja2) {
  if (jinja_python().empty())
    GTEST_SKIP() << "python3 with jinja2 not found: Jinja2 comparison skipped (pip install jinja2==3.1.6)";
  struct T {
    const char* file;
    const char* bos;
    const char* eos;
  };
  const T templates[] = {{"qwen2.5-7b-instruct.jinja", "", "<|im_end|>"},
                         {"llama-3.1-8b-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"},
                         {"hermes-2-pro-llama-3-8b-tool-use.jinja", "<|begin_of_text|>", "<|im_end|>"}};
  // Not here: Hermes-3's and Functionary's templates read `content` of every message (HF's tool-call
  // messages have none), Firefunction-v2's reads `functions`, Mistral v0.3's wants 9-character
  // call ids (Jinja2 fails on those the same way), and Granite-3.2's prints today's date.
  const ordered_json data = ordered_json::parse(read_file(kGlaive));
  ordered_json req = {{"now", 0}, {"templates", ordered_json::array()}, {"cases", ordered_json::array()}};
  for (const T& t : templates) req["templates"].push_back(fixture(t.file));
  std::vector<std::string> labels;
  std::vector<std::optional<std::vector<sft::Segment>>> got;
  std::vector<std::string> got_error;
  for (size_t ti = 0; ti < std::size(templates); ++ti) {
    const sft::ModelChatTemplate tmpl = fixture_template(templates[ti].file, templates[ti].bos, templates[ti].eos);
    for (size_t i = 0; i < data.size(); ++i) {
      const sft::Conversation conv = parse(data[i].dump(), sft::DataFormat::sharegpt);
      ordered_json ctx = {{"messages", sft::ModelChatTemplate::messages_of(conv)},
                          {"tools", sft::ModelChatTemplate::tools_of(conv)},
                          {"documents", nullptr},
                          {"add_generation_prompt", false},
                          {"bos_token", templates[ti].bos},
                          {"eos_token", templates[ti].eos}};
      req["cases"].push_back({{"template", ti}, {"context", ctx}});
      labels.push_back(std::string(templates[ti].file) + " sample " + std::to_string(i));
      std::string why, error;
      std::optional<std::vector<sft::Segment>> segs;
      try {
        segs = tmpl.render_segments(conv, &why);
        if (!segs) error = "not split: " + why;
      } catch (const sft::Error& e) {
        error = e.what();
      }
      got.push_back(std::move(segs));
      got_error.push_back(error);
    }
  }
  const fs::path dir = temp_dir("tool_calls_jinja2");
  write_file(dir / "request.json", req.dump());
  const RunResult r = run(jinja_python() + " " + kRoot + "/tests/data/jinja_reference.py " +
                          (dir / "request.json").string() + " > " + (dir / "expected.json").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const ordered_json expected = ordered_json::parse(read_file(dir / "expected.json"));
  ASSERT_EQ(expected.size(), labels.size());
  // Hermes-2-Pro's tool_use template iterates `tools` unguarded: without tools Jinja2 fails
  // (HF renders such samples with the default template); sft must fail there too.
  int split = 0, both_fail = 0;
  for (size_t c = 0; c < labels.size(); ++c) {
    if (expected[c].contains("error")) {
      EXPECT_FALSE(got[c]) << labels[c] << ": Jinja2 fails (" << expected[c]["error"] << "), sft does not";
      EXPECT_NE(got_error[c].find("[jinja]"), std::string::npos) << labels[c] << ": " << got_error[c];
      both_fail += 1;
      continue;
    }
    ASSERT_TRUE(got[c]) << labels[c] << ": " << got_error[c];
    EXPECT_EQ(joined(*got[c]), expected[c]["text"].get<std::string>()) << labels[c];
    split += 1;
  }
  std::cerr << "[ tool calls ] " << split << " renderings equal to Jinja2's, " << both_fail << " failing in both\n";
  EXPECT_EQ(split, 3 * 30 - 13);  // all but Hermes-2-Pro tool_use over the 13 samples with "[]" tools
  EXPECT_EQ(both_fail, 13);
}

// A built-in template has no tool calls or results: such samples are counted with the reason,
// the others (plain turns; their tools list is not rendered) are kept.
TEST(ToolCalls, BuiltinTemplateCountsToolSamplesInvalid) {
  const sft::Dataset ds = load(fs::path(kLlama2), kGlaive, "vicuna_v1.1");
  EXPECT_EQ(ds.size(), 15);
  EXPECT_EQ(ds.stats().invalid, 15);
  ASSERT_EQ(ds.issues().size(), 15u);
  EXPECT_EQ(ds.issues()[0].index, 0);
  for (const sft::SampleIssue& i : ds.issues()) {
    EXPECT_EQ(i.kind, sft::IssueKind::tools_unsupported);
    EXPECT_NE(i.detail.find("built-in template 'vicuna_v1.1'"), std::string::npos) << i.detail;
  }
  const std::string text = sft::describe_issue(ds.path(), ds.issues()[1]);
  EXPECT_NE(text.find(":sample 3 "), std::string::npos) << text;
  EXPECT_NE(text.find("template without tool support"), std::string::npos) << text;
}

// A model template that prints only role and content renders no tool call (the function name is
// not in the answer's text): tools_unsupported, never a silently empty trained span. One that
// skips tool messages loses the tool results: tools_unsupported as well.
TEST(ToolCalls, ModelTemplateWithoutToolSupportCountsToolSamples) {
  const sft::Dataset plain = load(
      model_with_template("plain", "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"), kGlaive);
  EXPECT_EQ(plain.size(), 15);
  ASSERT_EQ(plain.issues().size(), 15u);
  EXPECT_EQ(plain.issues()[0].kind, sft::IssueKind::tools_unsupported);
  EXPECT_NE(plain.issues()[0].detail.find("the call of 'search_recipes'"), std::string::npos) << plain.issues()[0].detail;
  const sft::Dataset skips = load(
      model_with_template("skips", "{% for m in messages %}{% if m.role != 'tool' %}<{{ m.role }}>{{ m.content }}"
                                   "{{ m.tool_calls | tojson if m.tool_calls else '' }}\n{% endif %}{% endfor %}"),
      kGlaive);
  EXPECT_EQ(skips.size(), 15);
  ASSERT_EQ(skips.issues().size(), 15u);
  EXPECT_EQ(skips.issues()[0].kind, sft::IssueKind::tools_unsupported);
  EXPECT_NE(skips.issues()[0].detail.find("the tool result"), std::string::npos) << skips.issues()[0].detail;
}

// A list of named templates: samples with tools are rendered with "tool_use" (as HF picks it),
// the others with "default".
TEST(ToolCalls, ToolUseTemplateIsPickedForSamplesWithTools) {
  const ordered_json named = ordered_json::array(
      {{{"name", "default"}, {"template", "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"}},
       {{"name", "tool_use"}, {"template", fixture("qwen2.5-7b-instruct.jinja")}}});
  const fs::path model = model_with_template("named", named);
  const sft::Dataset ds = load(model, kGlaive);
  EXPECT_EQ(ds.size(), 30);
  auto tok = sft::load_tokenizer(model.string());
  EXPECT_NE(tok->decode(ds.ids(0), true).find("<tool_call>"), std::string::npos);  // sample 0 has tools
  EXPECT_TRUE(tok->decode(ds.ids(1), true).starts_with("<user>")) << tok->decode(ds.ids(1), true);  // "[]": none
}

// Validation: calls, results and answers in the order templates expect; errors name the message.
TEST(ToolCalls, ValidationOfCallsResultsAndAnswers) {
  const auto issue_of = [](const std::string& turns) {
    std::optional<sft::SampleIssue> issue;
    parse(R"({"conversations": [)" + turns + "]}", sft::DataFormat::sharegpt, &issue);
    return issue;
  };
  const std::string h = R"({"from": "human", "value": "q"})", g = R"({"from": "gpt", "value": "a"})";
  const std::string call = R"({"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": {\"x\": 1}}"})";
  const std::string two = R"({"from": "function_call", "value": "[{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"g\", \"arguments\": {}}]"})";
  const std::string obs = R"({"from": "observation", "value": "{\"r\": 2}"})";
  // Accepted: a call, its result, the answer; calls in a row; two calls at once with two results.
  EXPECT_FALSE(issue_of(h + "," + call + "," + obs + "," + g));
  EXPECT_FALSE(issue_of(h + "," + call + "," + obs + "," + call + "," + obs + "," + g + "," + h + "," + g));
  EXPECT_FALSE(issue_of(h + "," + two + "," + obs + "," + obs + "," + g));
  EXPECT_FALSE(issue_of(h + "," + call));  // ends on a call: the call is trained
  const sft::Conversation c = parse(R"({"conversations": [)" + h + "," + two + "," + obs + "," + obs + "," + g + "]}",
                                    sft::DataFormat::sharegpt);
  ASSERT_EQ(c.messages.size(), 5u);
  EXPECT_EQ(c.messages[1].tool_calls.size(), 2u);
  EXPECT_EQ(c.messages[2].name, "f");
  EXPECT_EQ(c.messages[3].name, "g");
  // Rejected, naming the message.
  struct Bad {
    std::string turns;
    sft::IssueKind kind;
    std::string text;
  };
  const Bad bad[] = {
      {h + "," + obs + "," + g, sft::IssueKind::alternation, "message 1: expected an assistant turn, got 'observation'"},
      {h + "," + call + "," + g, sft::IssueKind::alternation, "message 2: expected a tool result"},
      {h + "," + call + "," + obs, sft::IssueKind::alternation, "message 2: the conversation ends on a tool result"},
      {h + "," + call + "," + obs + "," + h + "," + g, sft::IssueKind::alternation, "message 3: expected a tool result or an assistant turn"},
      {h + R"(, {"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": "})", sft::IssueKind::bad_tool_call,
       "message 1: the function_call value is not JSON"},
      {h + R"(, {"from": "function_call", "value": "{\"arguments\": {}}"})", sft::IssueKind::bad_tool_call,
       "message 1: tool call 0 is not {\"name\": str, \"arguments\": ...}"},
      {h + R"(, {"from": "function_call", "value": "{\"name\": \"f\"}"})", sft::IssueKind::bad_tool_call,
       "message 1: tool call 0 ('f') has no 'arguments'"},
      {h + R"(, {"from": "function_response", "value": "x"})", sft::IssueKind::unknown_role,
       "message 1: unknown role 'function_response'"},
      {h + "," + call + R"(, {"from": "observation", "value": ""})", sft::IssueKind::empty_message, "message 2: empty tool message"},
  };
  for (const Bad& b : bad) {
    const std::optional<sft::SampleIssue> issue = issue_of(b.turns);
    ASSERT_TRUE(issue) << b.turns;
    EXPECT_EQ(issue->kind, b.kind) << issue->detail;
    EXPECT_NE(issue->detail.find(b.text), std::string::npos) << issue->detail;
  }
  // A malformed sample-level tools string is a schema error.
  std::optional<sft::SampleIssue> issue;
  parse(R"({"conversations": [)" + h + "," + g + R"(], "tools": "[{\"name\": "})", sft::DataFormat::sharegpt, &issue);
  ASSERT_TRUE(issue);
  EXPECT_EQ(issue->kind, sft::IssueKind::bad_schema);
  EXPECT_NE(issue->detail.find("'tools' is a string that is not JSON"), std::string::npos) << issue->detail;
}

// Through load_dataset the report names the file, the sample and the message.
TEST(ToolCalls, ErrorsNameSampleAndMessage) {
  const std::string path = data_file("errors", R"([
    {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{not json"}]},
    {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": "human", "value": "q"},
                       {"from": "tool_result", "value": "x"}]}])");
  const sft::Dataset ds = load(fs::path(kLlama2), path, "vicuna_v1.1");
  EXPECT_EQ(ds.size(), 1);
  ASSERT_EQ(ds.issues().size(), 2u);
  const std::string first = sft::describe_issue(ds.path(), ds.issues()[0]);
  EXPECT_NE(first.find("data.json:sample 1 (line 3): malformed tool call: message 1: the function_call value is not JSON"),
            std::string::npos) << first;
  const std::string second = sft::describe_issue(ds.path(), ds.issues()[1]);
  EXPECT_NE(second.find(":sample 2 (line 4): unknown role: message 3: unknown role 'tool_result'"), std::string::npos)
      << second;
}

// OpenAI-style samples: assistant tool_calls (with ids, arguments as objects), role tool with
// tool_call_id, a tools list; the HF messages are the data's own (key order kept), and Qwen2.5
// trains the call, not the result.
TEST(ToolCalls, OpenAiMessagesFormat) {
  const std::string sample = R"({"messages": [
      {"role": "system", "content": "Use tools."},
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris"}}}]},
      {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "21 degrees"},
      {"role": "assistant", "content": "It is 21 °C in Paris."}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}}}]})";
  const sft::Conversation conv = parse(sample, sft::DataFormat::messages);
  const ordered_json in = ordered_json::parse(sample);
  EXPECT_EQ(sft::ModelChatTemplate::messages_of(conv).dump(), in["messages"].dump());
  EXPECT_EQ(sft::ModelChatTemplate::tools_of(conv).dump(), in["tools"].dump());
  const sft::ModelChatTemplate qwen = fixture_template("qwen2.5-7b-instruct.jinja", "", "<|im_end|>");
  std::string why;
  const auto segs = qwen.render_segments(conv, &why);
  ASSERT_TRUE(segs) << why;
  std::vector<std::string> trained;
  for (const sft::Segment& s : *segs)
    if (s.train) trained.push_back(s.text);
  EXPECT_EQ(trained, (std::vector<std::string>{
                         "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"c\", \"city\": \"Paris\"}}\n"
                         "</tool_call><|im_end|>",
                         "It is 21 °C in Paris.<|im_end|>"}));
  EXPECT_NE(joined(*segs).find("<tool_response>\n21 degrees\n</tool_response>"), std::string::npos);
  // Through load_dataset (JSON Lines, format detected).
  const fs::path model = model_with_template("qwen25_messages", fixture("qwen2.5-7b-instruct.jinja"));
  std::string line = in.dump();
  const sft::Dataset ds = load(model, data_file("openai", line + "\n"));
  EXPECT_EQ(ds.size(), 1);
  for (const sft::SampleIssue& i : ds.issues()) ADD_FAILURE() << sft::describe_issue(ds.path(), i);
}
