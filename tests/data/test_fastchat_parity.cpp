// Ids and labels against FastChat's own preprocess() (fschat 0.2.36, slow LlamaTokenizer), for
// vicuna_v1.1 with the LLaMA-2 tokenizer in both `legacy` settings, over every sample of
// FastChat's dummy conversations and of LLaMA-Factory's Alpaca demo turned into conversations
// (FastChat's convert_alpaca.py rule). Also decode(input_ids) == the rendered text. The reference
// is produced at test time by tools/fastchat_reference.py in the test virtualenv.
#include <gtest/gtest.h>

#include <map>

#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/sample_reader.h"
#include "data_test_util.h"
#include "tokenizer/tokenizer.h"

using namespace data_test;

namespace {

struct Case {
  const char* name;
  bool alpaca;
  bool legacy;
  int64_t max_length;
  std::string data = "";  // default: the dummy conversations or the Alpaca demo
};

// Samples FastChat's preprocess() cannot align ("tokenization mismatch"), between ordinary ones.
std::string edge_case_file() {
  const auto turn = [](const char* from, const std::string& v) {
    return nlohmann::json{{"from", from}, {"value", v}};
  };
  const std::vector<std::vector<std::string>> convs = {
      {"Hello!", "Hi!"},
      {"What is </s>?", "It is the end-of-sequence token."},
      {"Repeat: ASSISTANT: ok", "ok"},
      {"Say it", "Here: </s> done"},
      {"An <unk> token", "Fine."},
      {"  leading spaces", "  and here\n\nwith lines  "},
      {"Пример 中文 😀", "Ответ 文字 👍🏽"},
      {"One", "Two", "Three", "Four", "Five", "Six"},
      {"Ends on user", "answer", "question?"},
  };
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& c : convs) {
    nlohmann::json turns = nlohmann::json::array();
    for (size_t i = 0; i < c.size(); ++i) turns.push_back(turn(i % 2 ? "gpt" : "human", c[i]));
    arr.push_back({{"id", "edge"}, {"conversations", turns}});
  }
  const fs::path p = temp_dir("fastchat-edge") / "edge.json";
  write_file(p, arr.dump(1));
  return p.string();
}

// decode() of the ids after BOS (HF LlamaTokenizer.decode). Non-legacy: exactly the rendered
// text. Legacy: the tokenizer itself puts SentencePiece's dummy prefix "▁" at the start and after
// every special token (the behaviour `legacy=False` fixes), and decode shows those as spaces.
std::string expected_decode(const std::string& rendered, bool legacy) {
  if (!legacy) return rendered;
  std::string out = " ";
  for (size_t i = 0; i < rendered.size(); ++i) {
    out += rendered[i];
    if (out.ends_with("</s>") && i + 1 < rendered.size()) out += ' ';
  }
  return out;
}

void run_case(const Case& c) {
  if (!fs::exists(kPython)) GTEST_SKIP() << "no test virtualenv (" << kPython << "): run scripts/setup_venv.sh";
  if (run(kPython + " -c 'import fastchat'").code != 0)
    GTEST_SKIP() << "fschat is not installed in the test virtualenv (see scripts/setup_venv.sh)";
  const std::string data = !c.data.empty() ? c.data : c.alpaca ? kShared + "/data/alpaca_en_demo.json" : dummy_data();
  if (!fs::exists(data)) GTEST_SKIP() << data << " is absent";
  const std::string tok_dir = llama2_with_legacy(c.legacy);
  const fs::path ref = temp_dir(std::string("fastchat-") + c.name) / "ref.jsonl";
  RunResult r = run(kPython + " " + kRoot + "/tools/fastchat_reference.py preprocess --data " + data +
                    " --format " + (c.alpaca ? "alpaca" : "sharegpt") + " --tokenizer " + tok_dir +
                    " --model_max_length " + std::to_string(c.max_length) + " --out " + ref.string());
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_NE(r.out.find(std::string("\"legacy\": ") + (c.legacy ? "true" : "false")), std::string::npos) << r.out;

  auto tok = sft::load_tokenizer(tok_dir);
  sft::DataOptions opt;
  opt.model_max_length = c.max_length;
  opt.format = c.alpaca ? sft::DataFormat::alpaca : sft::DataFormat::sharegpt;
  const sft::Dataset ds = sft::load_dataset(data, *tok, opt);
  std::map<int64_t, int64_t> row_of;  // file index -> dataset row
  for (int64_t i = 0; i < ds.size(); ++i) row_of[ds.source_index(i)] = i;
  std::map<int64_t, std::string> dropped;
  for (const auto& issue : ds.issues()) dropped[issue.index] = issue.detail;

  sft::SampleFile file(data);
  const sft::ChatTemplate& vicuna = sft::find_template("vicuna_v1.1");
  int64_t compared = 0, fastchat_mismatch = 0, fastchat_error = 0, ours_dropped_fastchat_all_masked = 0;
  int64_t decode_checked = 0, mismatch_kept = 0, invalid_here = 0;
  for (const nlohmann::json& rec : read_jsonl(ref)) {
    const int64_t index = rec["index"];
    if (rec.contains("error")) {
      ++fastchat_error;
      continue;
    }
    sft::Conversation conv;
    if (sft::parse_sample(file.text(index), opt.format, conv).issue) {
      // Invalid here (e.g. it ends on a user turn): FastChat must not train on it either.
      EXPECT_TRUE(rec["mismatch"].get<bool>()) << "sample " << index;
      ++invalid_here;
      ++fastchat_mismatch;
      continue;
    }
    const std::string rendered = sft::render_text(vicuna, conv);
    EXPECT_EQ(rendered, rec["rendered"].get<std::string>()) << "sample " << index;
    const std::vector<int32_t> want_ids = rec["input_ids"], want_labels = rec["labels"];
    if (rec["mismatch"].get<bool>()) {
      // FastChat masks the whole sample; its ids are still those of the rendered text.
      ++fastchat_mismatch;
      if (row_of.count(index)) {
        const auto ids = ds.ids(row_of[index]);
        EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.end()), want_ids) << "sample " << index;
        ++mismatch_kept;
      }
      continue;
    }
    if (!row_of.count(index)) {
      // Only a sample that FastChat keeps with every label masked may be dropped here.
      bool all_masked = true;
      for (int32_t l : want_labels) all_masked &= l == -100;
      EXPECT_TRUE(all_masked) << "sample " << index << " dropped: " << dropped[index];
      ours_dropped_fastchat_all_masked += all_masked;
      continue;
    }
    const int64_t row = row_of[index];
    const auto ids = ds.ids(row);
    ASSERT_EQ(std::vector<int32_t>(ids.begin(), ids.end()), want_ids) << "sample " << index << ": " << rendered;
    ASSERT_EQ(ds.labels(row), want_labels) << "sample " << index << ": " << rendered;
    ++compared;
    if (static_cast<int64_t>(ids.size()) < c.max_length) {
      EXPECT_EQ(tok->decode(ids.subspan(1)), expected_decode(rendered, c.legacy)) << "sample " << index;
      ++decode_checked;
    }
  }
  std::printf("[ parity ] %s: %lld samples equal to FastChat (ids and labels); %lld that FastChat drops as "
              "'tokenization mismatch' (%lld of them trained here, same ids); %lld FastChat errors; %lld dropped here "
              "that FastChat keeps fully masked; %lld invalid here; decode(ids after BOS) == rendered text on %lld\n",
              c.name, (long long)compared, (long long)fastchat_mismatch, (long long)mismatch_kept,
              (long long)fastchat_error, (long long)ours_dropped_fastchat_all_masked, (long long)invalid_here,
              (long long)decode_checked);
  EXPECT_GT(compared, 0);
  EXPECT_EQ(ds.stats().encoder_fallbacks, 0);
}

TEST(FastChatParity, DummyNonLegacy) { run_case({"dummy-nonlegacy", false, false, 4096}); }
TEST(FastChatParity, DummyLegacy) { run_case({"dummy-legacy", false, true, 4096}); }
TEST(FastChatParity, AlpacaNonLegacy) { run_case({"alpaca-nonlegacy", true, false, 4096}); }
TEST(FastChatParity, AlpacaLegacy) { run_case({"alpaca-legacy", true, true, 4096}); }
// Truncation: FastChat keeps cut samples with the labels that survive the cut.
TEST(FastChatParity, DummyTruncated64) { run_case({"dummy-trunc64", false, false, 64}); }
TEST(FastChatParity, AlpacaTruncated128Legacy) { run_case({"alpaca-trunc128-legacy", true, true, 128}); }
// FastChat's failure cases: its ids are ours; it drops the samples we train correctly.
TEST(FastChatParity, EdgeCasesNonLegacy) { run_case({"edge-nonlegacy", false, false, 4096, edge_case_file()}); }
TEST(FastChatParity, EdgeCasesLegacy) { run_case({"edge-legacy", false, true, 4096, edge_case_file()}); }

}  // namespace
