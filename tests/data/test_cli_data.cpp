// `sft data stats|preview|dump|validate`, run in-process through run_data() with stdout captured,
// and through the sft binary once main.cpp dispatches `data` (skipped before).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <functional>

#include "core/check.h"
#include "data_test_util.h"

namespace sft {
int run_data(int argc, char** argv);
}

using namespace data_test;

namespace {

struct Captured {
  int code;
  std::string out;
};

// Runs `sft data ARGS...` in this process with stdout redirected to a file.
Captured run_in_process(std::vector<std::string> args) {
  args.insert(args.begin(), "data");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  const fs::path out = temp_dir("cli") / "stdout.txt";
  std::fflush(stdout);
  const int saved = dup(1);
  const int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fd, 1);
  close(fd);
  int code = -1;
  std::string error;
  try {
    code = sft::run_data(static_cast<int>(argv.size()), argv.data());
  } catch (const sft::Error& e) {
    error = e.what();
  }
  std::fflush(stdout);
  dup2(saved, 1);
  close(saved);
  if (!error.empty()) return {1, "error: " + error};
  return {code, read_file(out)};
}

std::string bad_file() {
  const fs::path p = temp_dir("cli-bad") / "bad.json";
  write_file(p, R"([{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
{"conversations": [{"from": "human", "value": "a"}, {"from": "narrator", "value": "b"}]},
{"conversations": [{"from": "human", "value": "a"}]},
{"conversations": [{"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye!"}]}])");
  return p.string();
}

TEST(CliData, DumpHasOneLinePerInputSampleInOrder) {
  const fs::path out = temp_dir("cli-dump") / "dump.jsonl";
  Captured c = run_in_process({"dump", "--data_path", bad_file(), "--tokenizer", kLlama2, "--output", out.string()});
  ASSERT_EQ(c.code, 0) << c.out;
  const auto lines = read_jsonl(out);
  ASSERT_EQ(lines.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(lines[i]["index"], i);
  EXPECT_FALSE(lines[1].contains("input_ids"));
  EXPECT_NE(lines[1]["dropped"].get<std::string>().find("unknown role 'narrator'"), std::string::npos);
  EXPECT_NE(lines[2]["dropped"].get<std::string>().find("ends on a user turn"), std::string::npos);
  const std::vector<int32_t> ids = lines[3]["input_ids"], labels = lines[3]["labels"];
  ASSERT_EQ(ids.size(), labels.size());
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(labels.back(), 2);
  EXPECT_EQ(labels.front(), -100);
  // To stdout as well.
  Captured s = run_in_process({"dump", "--data_path", bad_file(), "--tokenizer", kLlama2});
  EXPECT_EQ(s.out, read_file(out));
}

TEST(CliData, ValidateListsEveryBadSampleAndFails) {
  Captured c = run_in_process({"validate", "--data_path", bad_file(), "--tokenizer", kLlama2});
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(c.out.find("bad.json:sample 1 (line 2): unknown role: message 1: unknown role 'narrator'"),
            std::string::npos) << c.out;
  EXPECT_NE(c.out.find("bad.json:sample 2 (line 3): ends on a user turn"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("4 samples, 2 valid, 2 invalid"), std::string::npos) << c.out;
  Captured ok = run_in_process({"validate", "--data_path", dummy_data(), "--tokenizer", kLlama2});
  EXPECT_EQ(ok.code, 0) << ok.out;
  Captured strict = run_in_process({"stats", "--data_path", bad_file(), "--tokenizer", kLlama2, "--strict_data", "True"});
  EXPECT_EQ(strict.code, 1);
  EXPECT_NE(strict.out.find("[data] " + bad_file() + ":sample 1 (line 2): unknown role"), std::string::npos) << strict.out;
}

TEST(CliData, StatsOnTheDummyData) {
  Captured c = run_in_process(
      {"stats", "--data_path", dummy_data(), "--tokenizer", kLlama2, "--model_max_length", "2048"});
  ASSERT_EQ(c.code, 0) << c.out;
  for (const char* want : {"500 in the file: 500 kept, 0 invalid, 0 dropped", "trainable", "FastChat padding (every sample padded to 2048):",
                           "  4.5%", "packing (default; best-fit rows of 2048 tokens):", "lengths"})
    EXPECT_NE(c.out.find(want), std::string::npos) << want << "\n" << c.out;
  Captured bad = run_in_process({"stats", "--data_path", bad_file(), "--tokenizer", kLlama2});
  EXPECT_NE(bad.out.find("unknown role"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("(first: sample 1)"), std::string::npos) << bad.out;
}

TEST(CliData, PreviewMarksTrainedText) {
  Captured c = run_in_process({"preview", "--data_path", dummy_data(), "--tokenizer", kLlama2, "--index", "0"});
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_NE(c.out.find("<s>A chat between"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("ASSISTANT:« I am Vicuna, a language model trained by researchers from Large Model Systems "
                       "Organization (LMSYS).</s>»USER: Have a nice day! ASSISTANT:« You too!</s>»"),
            std::string::npos)
      << c.out;
  Captured color = run_in_process(
      {"preview", "--data_path", dummy_data(), "--tokenizer", kLlama2, "--num_samples", "2", "--color", "always"});
  EXPECT_NE(color.out.find("\x1b[1;32m You too!</s>\x1b[0m"), std::string::npos) << color.out;
  EXPECT_NE(color.out.find("=== sample 1"), std::string::npos);
  Captured skipped = run_in_process({"preview", "--data_path", bad_file(), "--tokenizer", kLlama2, "--index", "1-2"});
  EXPECT_NE(skipped.out.find("=== sample 1: skipped"), std::string::npos) << skipped.out;
}

TEST(CliData, ArgumentErrors) {
  EXPECT_NE(run_in_process({"stats", "--data_path", dummy_data()}).out.find("--tokenizer"), std::string::npos);
  EXPECT_NE(run_in_process({"stats", "--data_path", dummy_data(), "--tokenizer", kLlama2, "--packing", "maybe"}).out.find(
                "--packing expects True or False"),
            std::string::npos);
  EXPECT_NE(run_in_process({"frobnicate", "--data_path", dummy_data(), "--tokenizer", kLlama2}).code, 0);
  EXPECT_NE(run_in_process({"stats", "--data_path", "/nonexistent.json", "--tokenizer", kLlama2}).out.find("cannot open"),
            std::string::npos);
}

TEST(CliData, BinaryDispatchesData) {
  RunResult help = run(kSft + " data --help");
  if (help.out.find("unknown command") != std::string::npos) GTEST_SKIP() << "sft does not dispatch `data` yet";
  EXPECT_EQ(help.code, 0) << help.out;
  RunResult r = run(kSft + " data validate --data_path " + bad_file() + " --tokenizer " + kLlama2);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("unknown role 'narrator'"), std::string::npos) << r.out;
  RunResult bad = run(kSft + " data stats --data_path " + kRoot + "/CMakeLists.txt --tokenizer " + kLlama2);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("error: [data]"), std::string::npos) << bad.out;
}

}  // namespace
