// --save_total_limit with a damaged checkpoint, through the sft binary: a run leaves checkpoints 2
// and 4, checkpoint-4 gets a changed byte; the next run (saving every 3 steps, limit 2) resumes
// from 2, keeps 2 and 3 beside the damaged 4 at its first save (which does not count: a WARNING
// names it once), deletes 2 at the next, and deletes the damaged 4 and 3 once 6 and 9 verify, each
// deletion in the log. Counting the damaged one (as before) would have deleted 2 at the first save
// and 3 at the second, leaving one good checkpoint beside the damaged one.
#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <vector>

#include "../cli/cli_test_util.h"

using namespace cli_test;

namespace {

std::string train_cmd(const fs::path& model, const fs::path& out, int steps, int save_steps) {
  return kSft + " train --model_name_or_path " + model.string() + " --data_path " + kDummyData + " --output_dir " +
         out.string() + " --model_max_length 128 --per_device_train_batch_size 2 --learning_rate 1e-3" +
         " --logging_steps 1 --bf16 False --threads 1 --seed 7 --report_to none --max_steps " + std::to_string(steps) +
         " --save_strategy steps --save_steps " + std::to_string(save_steps) + " --save_total_limit 2";
}

std::set<std::string> checkpoints_in(const fs::path& out) {
  std::set<std::string> s;
  for (const auto& e : fs::directory_iterator(out))
    if (e.path().filename().string().starts_with("checkpoint-")) s.insert(e.path().filename().string());
  return s;
}

// The rotation lines of a run's output, in order: each checkpoint saved, kept damaged or deleted.
std::vector<std::string> rotation_lines(const std::string& out) {
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);)
    if ((l.starts_with("saved ") && l.find("checkpoint-") != std::string::npos) || l.starts_with("deleted ") ||
        (l.starts_with("WARNING: checkpoint") && l.find("does not verify") != std::string::npos))
      lines.push_back(l);
  return lines;
}

}  // namespace

TEST(RotationCli, ADamagedCheckpointDoesNotPushAGoodOneOut) {
  const fs::path root = temp_dir("rotation"), model = root / "model", out = root / "out";
  CmdResult r = init_small_model(root, model);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run(train_cmd(model, out, 4, 2));
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_EQ(checkpoints_in(out), (std::set<std::string>{"checkpoint-2", "checkpoint-4"}));
  {  // one changed byte in the newest checkpoint's weights
    const fs::path p = out / "checkpoint-4" / "model.safetensors";
    std::string b = read_file(p);
    b[b.size() / 2] = char(b[b.size() / 2] ^ 0x20);
    std::ofstream(p, std::ios::binary) << b;
  }
  r = run(train_cmd(model, out, 9, 3));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("resumed from " + (out / "checkpoint-2").string()), std::string::npos) << r.out;
  const std::string ck = (out / "checkpoint-").string();
  const std::vector<std::string> lines = rotation_lines(r.out);
  ASSERT_EQ(lines.size(), 7u) << r.out;
  EXPECT_EQ(lines[0], "saved " + ck + "3");
  EXPECT_TRUE(lines[1].starts_with("WARNING: checkpoint " + ck + "4 does not verify (model.safetensors: XXH3 ")) << lines[1];
  EXPECT_NE(lines[1].find("does not count toward --save_total_limit 2"), std::string::npos) << lines[1];
  EXPECT_EQ(lines[2], "saved " + ck + "6");
  EXPECT_EQ(lines[3], "deleted checkpoint " + ck + "2 (--save_total_limit 2)");
  EXPECT_EQ(lines[4], "saved " + ck + "9");
  EXPECT_TRUE(lines[5].starts_with("deleted the damaged checkpoint " + ck + "4: ")) << lines[5];
  EXPECT_EQ(lines[6], "deleted checkpoint " + ck + "3 (--save_total_limit 2)");
  EXPECT_EQ(checkpoints_in(out), (std::set<std::string>{"checkpoint-6", "checkpoint-9"}));
  if (!HasFailure()) fs::remove_all(root);
}
