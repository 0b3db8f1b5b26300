// `sft train` resuming against changed data, as a user meets it: after a run saved checkpoints,
// the same command on a data file with other content of the same size, on a data file of another
// size, or with another template is refused, naming the file with its old and new size and XXH3
// (computed here by core/file_hash, a separate read) or both templates, before any step; with
// --ignore_data_skip True it goes on from the first row of the saved epoch (the checkpoint it
// writes next holds that position), saying what it would have refused. Under mpirun, a rank whose
// data file differs from rank 0's is refused by the same fingerprint items.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../cli/cli_test_util.h"
#include "dist/world.h"
#include "core/file_hash.h"

using namespace cli_test;

namespace {

std::string commas(uint64_t v) {  // 234166 -> "234,166 bytes"
  std::string s = std::to_string(v), out;
  for (size_t i = 0; i < s.size(); ++i) out += (i && (s.size() - i) % 3 == 0 ? "," : "") + std::string(1, s[i]);
  return out + " bytes";
}

std::string xxh3_of_file(const fs::path& p) { return sft::xxh3_hex(sft::digest_file(p.string()).xxh3); }

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

CmdResult run_bounded(const std::string& cmd) { return run("timeout 300 " + cmd); }  // a hang fails, not blocks

class DataIdentity : public ::testing::Test {
 protected:
  // One run of 4 steps that saves checkpoint-2 and checkpoint-4 (8 rows per step: row 32).
  static void SetUpTestSuite() {
    root_ = temp_dir("data_identity");
    ASSERT_EQ(init_small_model(root_, root_ / "model").code, 0);
    write(root_ / "train.json", read_file(kDummyData));
    const CmdResult r = run_bounded(train_cmd(root_ / "base", 4));
    ASSERT_EQ(r.code, 0) << r.out;
    const auto st = nlohmann::json::parse(read_file(root_ / "base" / "checkpoint-4" / "trainer_state.json"));
    ASSERT_EQ(st["data"]["row"], 32) << st.dump();
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static std::string train_cmd(const fs::path& out, int steps, const fs::path& data = root_ / "train.json",
                               const std::string& extra = "") {
    return kSft + " train --model_name_or_path " + (root_ / "model").string() + " --data_path " +
           data.string() + " --output_dir " + out.string() +
           " --model_max_length 256 --per_device_train_batch_size 4 --gradient_accumulation_steps 2"
           " --learning_rate 1e-3 --max_steps " + std::to_string(steps) +
           " --save_strategy steps --save_steps 2 --logging_steps 1 --bf16 False --threads 2 --seed 7 " + extra;
  }

  // A copy of the base run's output_dir and of its data file, for one case.
  static std::pair<fs::path, fs::path> fresh_copy(const std::string& name) {
    const fs::path out = root_ / name, data = root_ / (name + ".json");
    fs::copy(root_ / "base", out, fs::copy_options::recursive);
    fs::copy_file(root_ / "train.json", data);
    return {out, data};
  }

  static inline fs::path root_;
};

TEST_F(DataIdentity, OtherContentOfTheSameSizeIsRefusedNamingBothChecksums) {
  const auto [out, data] = fresh_copy("content");
  std::string text = read_file(data);
  const std::string before = xxh3_of_file(data);
  const size_t at = text.find("\"value\": \"") + 10;
  text[at] = text[at] == 'Q' ? 'Z' : 'Q';
  write(data, text);
  const CmdResult r = run_bounded(train_cmd(out, 6, data));
  EXPECT_EQ(r.code, 1) << r.out;
  // The checkpoint's data_path was root_/train.json; this run's is root_/content.json.
  EXPECT_NE(r.out.find("data file " + data.string() + " (the checkpoint's was " + (root_ / "train.json").string() +
                       "): the same size (" + commas(text.size()) + ") but other content: XXH3 " + before +
                       " when the checkpoint was saved, " + xxh3_of_file(data) + " now"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pass --ignore_data_skip True to start epoch 0 of this data from its first row"),
            std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out / "checkpoint-6"));
}

TEST_F(DataIdentity, AnotherSizeIsRefusedNamingBothSizes) {
  const auto [out, data] = fresh_copy("size");
  const std::string text = read_file(data), before = xxh3_of_file(data);
  write(data, text + "\n");
  const CmdResult r = run_bounded(train_cmd(out, 6, data));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find(": " + commas(text.size()) + " when the checkpoint was saved, " + commas(text.size() + 1) +
                       " now (XXH3 " + before + ", now " + xxh3_of_file(data) + ")"),
            std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out / "checkpoint-6"));
}

TEST_F(DataIdentity, AnotherTemplateIsRefusedNamingBoth) {
  const auto [out, data] = fresh_copy("template");
  const CmdResult r = run_bounded(train_cmd(out, 6, root_ / "train.json", "--conversation_template llama-2"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("template: vicuna_v1.1 when the checkpoint was saved, llama-2 now"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("data file"), std::string::npos) << r.out;  // the file is the checkpoint's
  EXPECT_FALSE(fs::exists(out / "checkpoint-6"));
}

TEST_F(DataIdentity, IgnoreDataSkipStartsTheEpochFromItsFirstRow) {
  // Changed data: reported, not refused; the run goes on from row 0 of epoch 0.
  const auto [out, data] = fresh_copy("ignore");
  const std::string text = read_file(data);
  write(data, text + "\n");
  CmdResult r = run_bounded(train_cmd(out, 6, data, "--ignore_data_skip True"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--ignore_data_skip True: resuming although data file " + data.string()), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("(without the flag this resume is refused); epoch 0 of this data starts from its first row"),
            std::string::npos) << r.out;
  auto st = nlohmann::json::parse(read_file(out / "checkpoint-6" / "trainer_state.json"));
  EXPECT_EQ(st["global_step"], 6);
  EXPECT_EQ(st["data"]["epoch"], 0);
  EXPECT_EQ(st["data"]["row"], 16) << "2 steps of 8 rows from row 0 (not 32 + 16)";
  EXPECT_EQ(st["data"]["identity"]["data file size"], commas(text.size() + 1));  // the new data's identity

  // Unchanged data: the same, said as such.
  const fs::path same = root_ / "ignore_same";
  fs::copy(root_ / "base", same, fs::copy_options::recursive);
  r = run_bounded(train_cmd(same, 6, root_ / "train.json", "--ignore_data_skip True"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--ignore_data_skip True: epoch 0 starts from its first row instead of the saved position "
                       "(epoch 0, row 32)"), std::string::npos) << r.out;
  st = nlohmann::json::parse(read_file(same / "checkpoint-6" / "trainer_state.json"));
  EXPECT_EQ(st["data"]["row"], 16);

  // Without the flag the same resume continues at row 32.
  const fs::path plain = root_ / "plain";
  fs::copy(root_ / "base", plain, fs::copy_options::recursive);
  r = run_bounded(train_cmd(plain, 6));
  ASSERT_EQ(r.code, 0) << r.out;
  st = nlohmann::json::parse(read_file(plain / "checkpoint-6" / "trainer_state.json"));
  EXPECT_EQ(st["data"]["row"], 48);
}

TEST_F(DataIdentity, UnderMpirunARankWithOtherDataIsRefused) {
  if (!sft::mpi_built()) GTEST_SKIP() << "this build has no MPI: " << sft::no_mpi_reason();
  if (run("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not found (apt-get install openmpi-bin)";
  // Rank 1's copy of the data has one letter changed: same path-independent options, same size.
  const fs::path other = root_ / "rank1.json";
  std::string text = read_file(root_ / "train.json");
  const size_t at = text.find("\"value\": \"") + 10;
  text[at] = text[at] == 'Q' ? 'Z' : 'Q';
  write(other, text);
  const fs::path out = root_ / "ranks";
  const std::string mpirun = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                             "OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun --oversubscribe --timeout 240 -np 1 ";
  const std::string flags = " --per_device_train_batch_size 2 --threads 1";
  const CmdResult r = run(mpirun + train_cmd(out, 2, root_ / "train.json", flags) + " : -np 1 " +
                          train_cmd(out, 2, other, flags));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("data file XXH3 (--data_path) differs from rank 0's on rank(s) 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("with '" + xxh3_of_file(other) + "'"), std::string::npos) << r.out;
}

}  // namespace
