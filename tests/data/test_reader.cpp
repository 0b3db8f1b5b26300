// Readers and bad input (issue 3 "Bad input"): formats and their detection, per-sample system
// messages, every kind of bad sample counted with its index and reason (fatal with strict), and
// file-level errors (not JSON, not a list, 0 bytes). Also peak memory on a larger file.
#include <gtest/gtest.h>

#include <fstream>

#include "core/check.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/sample_reader.h"
#include "data_test_util.h"
#include "tokenizer/tokenizer.h"

using namespace data_test;

namespace {

const sft::Tokenizer& llama2() {
  static auto tok = sft::load_tokenizer(kLlama2);
  return *tok;
}

sft::Dataset load(const std::string& text, const std::string& name, sft::DataOptions opt = {}) {
  const fs::path p = temp_dir("reader") / name;
  write_file(p, text);
  return sft::load_dataset(p.string(), llama2(), opt);
}

std::string error_of(const std::string& text, const std::string& name, sft::DataOptions opt = {}) {
  try {
    load(text, name, opt);
  } catch (const sft::Error& e) {
    return e.what();
  }
  return "";
}

const std::string kGood = R"({"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]})";

TEST(Reader, ShareGptArrayAndJsonLinesGiveTheSameIds) {
  const sft::Dataset a = load("[" + kGood + ",\n" + kGood + "]", "a.json");
  const sft::Dataset b = load(kGood + "\n\n" + kGood + "\n", "b.jsonl");
  ASSERT_EQ(a.size(), 2);
  ASSERT_EQ(b.size(), 2);
  EXPECT_FALSE(a.stats().json_lines);
  EXPECT_TRUE(b.stats().json_lines);
  EXPECT_EQ(a.labels(1), b.labels(1));
  EXPECT_EQ(std::vector<int32_t>(a.ids(0).begin(), a.ids(0).end()), std::vector<int32_t>(b.ids(1).begin(), b.ids(1).end()));
  EXPECT_EQ(a.format(), sft::DataFormat::sharegpt);
}

TEST(Reader, MessagesAndAlpacaFormats) {
  const std::string msgs =
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, )"
      R"({"role": "assistant", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo!"}]}]})";
  const sft::Dataset m = load(msgs + "\n", "m.jsonl");
  ASSERT_EQ(m.size(), 1);
  EXPECT_EQ(m.format(), sft::DataFormat::messages);
  const std::string sys_sharegpt =
      R"([{"system": "Be brief.", "conversations": [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello!"}]}])";
  const sft::Dataset s = load(sys_sharegpt, "s.json");
  ASSERT_EQ(s.size(), 1);
  EXPECT_EQ(std::vector<int32_t>(m.ids(0).begin(), m.ids(0).end()), std::vector<int32_t>(s.ids(0).begin(), s.ids(0).end()))
      << "a system message and a top-level \"system\" give the same sample";
  // The system message replaces vicuna's: the text starts "Be brief. USER: Hi ASSISTANT:".
  EXPECT_EQ(llama2().decode(s.ids(0).subspan(1)), "Be brief. USER: Hi ASSISTANT: Hello!</s>");

  const sft::Dataset al = load(R"([{"instruction": "Add", "input": "1 2", "output": "3"}, )"
                               R"({"instruction": "Say hi", "input": " x ", "output": "hi"}, )"
                               R"({"instruction": "Q2", "output": "A2", "history": [["Q1", "A1"]]}])",
                               "alpaca.json");
  ASSERT_EQ(al.size(), 3);
  EXPECT_EQ(al.format(), sft::DataFormat::alpaca);
  const sft::ChatTemplate& v = sft::find_template("vicuna_v1.1");
  const std::string sys = std::string(v.system_message);
  EXPECT_EQ(llama2().decode(al.ids(0).subspan(1)), sys + " USER: Add\nInput:\n1 2 ASSISTANT: 3</s>");
  EXPECT_EQ(llama2().decode(al.ids(1).subspan(1)), sys + " USER: Say hi ASSISTANT: hi</s>")
      << "input of one character after strip() is left out, as FastChat's convert_alpaca.py";
  EXPECT_EQ(llama2().decode(al.ids(2).subspan(1)), sys + " USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>");

  sft::DataOptions forced;
  forced.format = sft::DataFormat::messages;
  const sft::Dataset wrong = load("[" + kGood + "]", "forced.json", forced);
  EXPECT_EQ(wrong.size(), 0);
  ASSERT_EQ(wrong.issues().size(), 1u);
  EXPECT_EQ(wrong.issues()[0].detail, "no 'messages' list");
}

struct BadCase {
  const char* name;
  std::string sample;
  sft::IssueKind kind;
  const char* detail_part;
};

TEST(Reader, BadSamplesAreCountedWithIndexAndReason) {
  std::vector<BadCase> cases = {
      {"no conversations", R"({"id": "x"})", sft::IssueKind::bad_schema, "no 'conversations' list"},
      {"not an object", R"([1, 2])", sft::IssueKind::bad_schema, "not a JSON object"},
      {"unknown role function_response",
       R"({"conversations": [{"from": "human", "value": "a"}, {"from": "function_response", "value": "{}"}]})",
       sft::IssueKind::unknown_role, "message 1: unknown role 'function_response'"},
      {"function_call that is not a call",
       R"({"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "{}"}]})",
       sft::IssueKind::bad_tool_call, "message 1: tool call 0 is not {\"name\": str"},
      {"observation without a call",
       R"({"conversations": [{"from": "human", "value": "a"}, {"from": "observation", "value": "a"}]})",
       sft::IssueKind::alternation, "message 1: expected an assistant turn, got 'observation'"},
      {"broken alternation",
       R"({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]})",
       sft::IssueKind::alternation, "message 1: expected an assistant turn"},
      {"empty message", R"({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": ""}]})",
       sft::IssueKind::empty_message, "message 1: empty assistant message"},
      {"empty conversation", R"({"conversations": []})", sft::IssueKind::empty_conversation, "no messages"},
      {"ends on user",
       R"({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}]})",
       sft::IssueKind::ends_on_user, "message 2: the conversation ends on a user turn"},
      {"system in the middle",
       R"({"conversations": [{"from": "human", "value": "a"}, {"from": "system", "value": "s"}]})",
       sft::IssueKind::system_position, "message 1"},
      {"value not a string", R"({"conversations": [{"from": "human", "value": null}]})", sft::IssueKind::bad_schema,
       "'value' is missing or not a string"},
      {"lone surrogate", R"({"conversations": [{"from": "human", "value": "a\ud800b"}, {"from": "gpt", "value": "c"}]})",
       sft::IssueKind::invalid_utf8, "surrogate"},
      {"invalid UTF-8", "{\"conversations\": [{\"from\": \"human\", \"value\": \"a\xff\xfe\"}, {\"from\": \"gpt\", \"value\": \"c\"}]}",
       sft::IssueKind::invalid_utf8, "UTF-8"},
      {"broken JSON", R"({"conversations": [{"from": "human" "value": "a"}]})", sft::IssueKind::invalid_json, "parse"},
  };
  // Nesting far deeper than any sample (copies and dump() of nlohmann values recurse per level):
  // the sample itself, a 'tools' string and a function_call string, each 30,000 levels.
  const std::string deep = std::string(30000, '[') + std::string(30000, ']');
  const std::string turns = R"([{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}])";
  cases.push_back({"sample nested 30,000 levels", R"({"conversations": )" + turns + R"(, "x": )" + deep + "}",
                   sft::IssueKind::invalid_json, "nested more than 512 levels deep"});
  cases.push_back({"tools nested 30,000 levels", R"({"tools": ")" + deep + R"(", "conversations": )" + turns + "}",
                   sft::IssueKind::bad_schema, "'tools' nests arrays and objects more than 512 levels deep"});
  cases.push_back({"function_call nested 30,000 levels",
                   R"({"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": ")" + deep +
                       R"("}]})",
                   sft::IssueKind::bad_tool_call, "nests arrays and objects more than 512 levels deep"});
  std::string file = "[\n" + kGood;
  for (const BadCase& c : cases) file += ",\n" + c.sample;
  file += ",\n" + kGood + "\n]\n";
  const sft::Dataset ds = load(file, "bad.json");
  EXPECT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.source_index(1), static_cast<int64_t>(cases.size() + 1));
  ASSERT_EQ(ds.issues().size(), cases.size());
  EXPECT_EQ(ds.stats().invalid, static_cast<int64_t>(cases.size()));
  for (size_t k = 0; k < cases.size(); ++k) {
    const sft::SampleIssue& i = ds.issues()[k];
    EXPECT_EQ(i.index, static_cast<int64_t>(k + 1)) << cases[k].name;
    EXPECT_EQ(i.line, static_cast<int64_t>(k + 3)) << cases[k].name;
    EXPECT_EQ(i.kind, cases[k].kind) << cases[k].name << ": " << i.detail;
    EXPECT_NE(i.detail.find(cases[k].detail_part), std::string::npos) << cases[k].name << ": " << i.detail;
  }
  // Strict: the first bad sample is fatal, named "[data] file:sample N (line L): reason".
  sft::DataOptions strict;
  strict.strict = true;
  const std::string e = error_of(file, "bad-strict.json", strict);
  EXPECT_NE(e.find("[data] "), std::string::npos) << e;
  EXPECT_NE(e.find("bad-strict.json:sample 1 (line 3): bad schema: no 'conversations' list"), std::string::npos) << e;
}

TEST(Reader, LeadingAssistantTurnIsDroppedAndCounted) {
  const sft::Dataset ds = load(R"([{"conversations": [{"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Hi"}, )"
                               R"({"from": "gpt", "value": "Yes"}]}])",
                               "lead.json");
  ASSERT_EQ(ds.size(), 1);
  EXPECT_EQ(ds.stats().leading_assistant_dropped, 1);
  EXPECT_TRUE(llama2().decode(ds.ids(0)).ends_with("USER: Hi ASSISTANT: Yes</s>"));
}

TEST(Reader, SpecialTextInsideMessagesIsKept) {
  // FastChat drops these ("tokenization mismatch"); here they are ordinary samples.
  const sft::Dataset ds = load(
      R"([{"conversations": [{"from": "human", "value": "What does </s> mean? ASSISTANT: hm"}, {"from": "gpt", "value": "It ends a turn: </s>"}]}])",
      "special.json");
  ASSERT_EQ(ds.size(), 1);
  EXPECT_EQ(ds.issues().size(), 0u);
  int64_t eos_trained = 0, eos_masked = 0;
  for (size_t t = 0; t < ds.ids(0).size(); ++t)
    if (ds.ids(0)[t] == 2) (ds.train(0)[t] ? eos_trained : eos_masked) += 1;
  EXPECT_EQ(eos_trained, 2);
  EXPECT_EQ(eos_masked, 1);
}

TEST(Reader, FileLevelErrors) {
  EXPECT_NE(error_of("", "empty.json").find("empty file (0 bytes)"), std::string::npos);
  EXPECT_NE(error_of("  \n ", "ws.json").find("only whitespace"), std::string::npos);
  EXPECT_NE(error_of("hello world", "text.json").find("not JSON"), std::string::npos);
  EXPECT_NE(error_of("42", "num.json").find("expected a JSON array of samples or JSON Lines"), std::string::npos);
  EXPECT_NE(error_of("{\n  \"conversations\": []\n}\n", "obj.json").find("JSON that is not a list of samples"),
            std::string::npos);
  EXPECT_NE(error_of("[" + kGood, "open.json").find("not closed"), std::string::npos);
  EXPECT_NE(error_of("[" + kGood + "] x", "trail.json").find("unexpected data after"), std::string::npos);
  EXPECT_NE(error_of("[{\"a\": [1}]", "mismatch.json").find("mismatched"), std::string::npos);
  EXPECT_NE(error_of("[]", "none.json", {}).find(""), std::string::npos);
  const std::string e = error_of(kGood, "x.json", {.conversation_template = "nope"});
  EXPECT_NE(e.find("unknown conversation template 'nope'"), std::string::npos) << e;
}

TEST(Reader, ByteOrderMarkAndEmptyArray) {
  const sft::Dataset ds = load("\xEF\xBB\xBF[" + kGood + "]", "bom.json");
  EXPECT_EQ(ds.size(), 1);
  const sft::Dataset none = load("[ ]", "empty-array.json");
  EXPECT_EQ(none.size(), 0);
  EXPECT_EQ(none.stats().samples, 0);
}

TEST(Reader, TruncationKeepsAndCountsAndDropsLabelless) {
  sft::DataOptions opt;
  opt.model_max_length = 48;  // the vicuna system prompt alone is 31 tokens
  const std::string long_answer = std::string(R"({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": ")") +
                                  std::string(200, 'a') + "\"}]}";
  const std::string long_question = std::string(R"({"conversations": [{"from": "human", "value": ")") +
                                    std::string(200, 'q') + R"("}, {"from": "gpt", "value": "ok"}]})";
  const sft::Dataset ds = load("[" + long_answer + "," + long_question + "]", "trunc.json", opt);
  ASSERT_EQ(ds.size(), 1);
  EXPECT_EQ(ds.length(0), 48);
  EXPECT_GT(ds.full_length(0), 48);
  EXPECT_EQ(ds.stats().truncated, 1);
  EXPECT_EQ(ds.stats().dropped, 1);
  ASSERT_EQ(ds.issues().size(), 1u);
  EXPECT_EQ(ds.issues()[0].kind, sft::IssueKind::no_trainable_token);
  EXPECT_NE(ds.issues()[0].detail.find("after truncation to 48 tokens"), std::string::npos);
}

// Mutated files (flipped, cut and inserted bytes, brackets, quotes, backslashes) end in a clean
// sft::Error or in counted bad samples, never in a crash (run under ASan/UBSan in CI).
TEST(Reader, MutatedFilesFailCleanly) {
  const std::string base = "[" + kGood + ",\n" + kGood + ",\n" +
                           R"({"messages": [{"role": "user", "content": "x\"y\\"}, {"role": "assistant", "content": "z"}]})" +
                           "]\n";
  const fs::path dir = temp_dir("fuzz");
  uint64_t state = 12345;
  const auto rnd = [&](uint64_t n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (state >> 33) % n;
  };
  const std::string specials = "[]{}\",\\: \n\xff\xc3";
  int errors = 0, loaded = 0;
  for (int k = 0; k < 400; ++k) {
    std::string t = base;
    for (uint64_t m = 1 + rnd(4); m > 0; --m) {
      const size_t at = rnd(t.size() + 1);
      switch (rnd(4)) {
        case 0: if (at < t.size()) t[at] = specials[rnd(specials.size())]; break;
        case 1: t.insert(at, 1, specials[rnd(specials.size())]); break;
        case 2: t.resize(at); break;
        default: if (at < t.size()) t.erase(at, 1 + rnd(8)); break;
      }
    }
    const fs::path p = dir / (k % 2 ? "f.jsonl" : "f.json");
    write_file(p, t);
    try {
      sft::load_dataset(p.string(), llama2(), {});
      ++loaded;
    } catch (const sft::Error& e) {
      EXPECT_NE(std::string(e.what()).find("[data] "), std::string::npos) << e.what();
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
  EXPECT_GT(loaded, 0);
}

// Peak memory while reading a ShareGPT file several times the size of the dummy data: well under
// 3x the file (the file's pages are read through a map; the tokens take ~1.25 bytes per byte).
TEST(Reader, PeakMemoryIsAFewTimesTheFile) {
#ifdef __SANITIZE_ADDRESS__
  GTEST_SKIP() << "AddressSanitizer's shadow memory and quarantine make RSS meaningless here";
#endif
  const fs::path p = temp_dir("big") / "big.json";
  {
    const std::string base = read_file(dummy_data());
    const std::string inner = base.substr(base.find('[') + 1, base.rfind(']') - base.find('[') - 1);
    std::ofstream out(p, std::ios::binary);
    out << "[";
    for (int k = 0; k < 100; ++k) out << (k ? "," : "") << inner;
    out << "]";
  }
  const auto status = [](const char* key) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
      if (line.starts_with(key)) return std::stoll(line.substr(std::string(key).size())) * 1024;
    return -1LL;
  };
  std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM to the current RSS
  const long long before = status("VmRSS:");
  const size_t bytes = fs::file_size(p);
  {
    const sft::Dataset ds = sft::load_dataset(p.string(), llama2(), {});
    EXPECT_EQ(ds.size(), 50000);
  }
  const long long peak = status("VmHWM:");
  if (before < 0 || peak < 0) GTEST_SKIP() << "no /proc/self/status";
  std::printf("[ memory ] %.1f MB file: peak RSS grew by %.1f MB (%.2fx the file)\n", bytes / 1e6, (peak - before) / 1e6,
              static_cast<double>(peak - before) / static_cast<double>(bytes));
  EXPECT_LT(peak - before, 3 * static_cast<long long>(bytes));
}

}  // namespace
