// Damaged checkpoints and one writer per output_dir, through the sft binary as a user runs it:
// a checkpoint with a truncated, changed or missing file (the model, the optimizer state,
// trainer_state.json with the data-loader position, config.json, the tokenizer, the manifest)
// is refused when named with --resume_from_checkpoint (the message names the file and the
// cause), and auto-resume skips it loudly, resumes from the previous one and ends bit-identical
// to an uninterrupted run. A second `sft train` on a live run's output_dir fails naming the
// holder's pid and host; after the holder is SIGKILLed a new run proceeds. Under mpirun -np 2
// (full_shard) a damaged rank's optimizer shard is skipped alike: rank 0 alone verifies, both
// ranks resume from the same older checkpoint and end bit-identical to an uninterrupted 2-rank run.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "../cli/cli_test_util.h"
#include "dist/world.h"

using namespace cli_test;

namespace {

constexpr int kSteps = 6;

class CheckpointFaults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = temp_dir("faults");
    CmdResult r = init_small_model(root_, model());
    ASSERT_EQ(r.code, 0) << r.out;
    r = run(train_cmd(straight()));
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static fs::path model() { return root_ / "model"; }
  static fs::path straight() { return root_ / "straight"; }

  // Checkpoints at steps 2, 4 and 6, all kept.
  static std::string train_cmd(const fs::path& out, const std::string& extra = "", int steps = kSteps,
                               const std::string& save = "--save_strategy steps --save_steps 2 --save_total_limit 0") {
    return kSft + " train --model_name_or_path " + model().string() + " --data_path " + kDummyData +
           " --output_dir " + out.string() +
           " --model_max_length 256 --per_device_train_batch_size 4 --gradient_accumulation_steps 2"
           " --learning_rate 1e-3 --lr_scheduler_type cosine --warmup_ratio 0.1 --logging_steps 1"
           " --bf16 False --threads 2 --seed 7 --max_steps " + std::to_string(steps) + " " + save + " " + extra;
  }

  static std::map<int64_t, double> step_losses(const fs::path& out) {
    std::map<int64_t, double> m;
    std::istringstream in(read_file(out / "metrics.jsonl"));
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss") && !j.contains("skipped")) m[j["step"].get<int64_t>()] = j["loss"].get<double>();
    }
    return m;
  }

  static inline fs::path root_;
};

struct Damage {
  const char* file;
  enum Kind { flip, truncate, remove } kind;
  const char* cause;  // in the message after the file name
};

void apply(const Damage& d, const fs::path& dir) {
  const fs::path p = dir / d.file;
  ASSERT_TRUE(fs::exists(p)) << p;
  const size_t size = fs::file_size(p);
  if (d.kind == Damage::remove) {
    fs::remove(p);
  } else if (d.kind == Damage::truncate) {
    fs::resize_file(p, size * 2 / 3);
  } else {
    std::string b = read_file(p);
    b[size / 2] = char(b[size / 2] ^ 0x10);
    std::ofstream(p, std::ios::binary) << b;
  }
}

std::string contains(const std::string& text, const std::string& what) {
  return text.find(what) == std::string::npos ? "'" + what + "' not in the output" : "";
}

}  // namespace

TEST_F(CheckpointFaults, ADamagedCheckpointIsRefusedByNameAndSkippedByAutoResume) {
  const std::vector<Damage> cases = {
      {"model.safetensors", Damage::truncate, "(truncated)"},
      {"model.safetensors", Damage::flip, "a changed byte"},
      {"optimizer.safetensors", Damage::flip, "a changed byte"},
      {"trainer_state.json", Damage::flip, "a changed byte"},  // also the data-loader position
      {"config.json", Damage::remove, "missing"},
      {"tokenizer.model", Damage::flip, "a changed byte"},
      {"checkpoint_complete.json", Damage::flip, "damaged"},
  };
  const auto want = step_losses(straight());
  ASSERT_EQ(want.size(), size_t(kSteps));
  for (size_t i = 0; i < cases.size(); ++i) {
    const Damage& d = cases[i];
    SCOPED_TRACE(std::string(d.file) + " " + d.cause);
    const fs::path out = root_ / ("fault_" + std::to_string(i));
    fs::create_directories(out);
    for (const char* c : {"checkpoint-2", "checkpoint-4"})
      fs::copy(straight() / c, out / c, fs::copy_options::recursive);
    apply(d, out / "checkpoint-4");

    // Named explicitly: an error naming the checkpoint, the file and the cause; nothing is trained.
    const std::string bad = (out / "checkpoint-4").string();
    CmdResult r = run(train_cmd(out, "--resume_from_checkpoint " + bad));
    EXPECT_EQ(r.code, 1) << r.out;
    const std::string err = last_line(r.out);
    for (const std::string& s : {"--resume_from_checkpoint " + bad + " is damaged and was not loaded",
                                 std::string(d.file) + ": ", std::string(d.cause)})
      EXPECT_EQ(contains(err, s), "") << err;
    EXPECT_FALSE(fs::exists(out / "checkpoint-6"));

    // Auto-resume: the damaged one is skipped with a warning, the run resumes from step 2 and
    // ends as the uninterrupted run did, bit for bit.
    r = run(train_cmd(out));
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(contains(r.out, "WARNING: checkpoint " + bad + " is damaged, skipped for resume: " + d.file + ": "), "") << r.out;
    EXPECT_EQ(contains(r.out, "WARNING: resuming from " + (out / "checkpoint-2").string()), "") << r.out;
    EXPECT_EQ(contains(r.out, "resumed from " + (out / "checkpoint-2").string() + " at step 2"), "") << r.out;
    const auto got = step_losses(out);
    EXPECT_EQ(got.size(), size_t(kSteps - 2));
    for (int64_t s = 3; s <= kSteps; ++s) {
      ASSERT_TRUE(got.count(s)) << "step " << s;
      EXPECT_EQ(got.at(s), want.at(s)) << "step " << s;
    }
    const std::string last = "checkpoint-" + std::to_string(kSteps);
    for (const char* f : {"model.safetensors", "optimizer-rank-00000-of-00002.safetensors",
                        "optimizer-rank-00001-of-00002.safetensors"})
      EXPECT_TRUE(read_file(straight() / last / f) == read_file(out / last / f)) << last << "/" << f;
    EXPECT_TRUE(read_file(straight() / "model.safetensors") == read_file(out / "model.safetensors"));
    // The step-4 checkpoint was written again, whole.
    EXPECT_TRUE(read_file(straight() / "checkpoint-4" / "model.safetensors") ==
                read_file(out / "checkpoint-4" / "model.safetensors"));
    fs::remove_all(out);
  }
}

TEST_F(CheckpointFaults, WhenNoCheckpointVerifiesAutoResumeStopsAndSaysWhy) {
  const fs::path out = root_ / "all_bad";
  fs::create_directories(out);
  fs::copy(straight() / "checkpoint-4", out / "checkpoint-4", fs::copy_options::recursive);
  apply({"optimizer.safetensors", Damage::truncate, ""}, out / "checkpoint-4");
  const CmdResult r = run(train_cmd(out));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(contains(r.out, "WARNING: checkpoint " + (out / "checkpoint-4").string() +
                                " is damaged, skipped for resume: optimizer.safetensors: "), "") << r.out;
  EXPECT_EQ(contains(last_line(r.out), "no checkpoint in " + out.string() + " verifies"), "") << r.out;
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
}

TEST_F(CheckpointFaults, ASecondRunOnALiveRunsOutputDirFailsAndAKilledHolderLeavesNoLock) {
  const fs::path out = root_ / "locked";
  fs::create_directories(out);
  const fs::path log = root_ / "holder.log";
  // The holder: a long run without checkpoints; exec'd, so its pid is sft's.
  const pid_t holder = fork();
  if (holder == 0) {
    const std::string cmd = "exec " + train_cmd(out, "", 1000000, "--save_strategy no") + " > " + log.string() + " 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  const fs::path lock = out / ".sft.lock";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (read_file(lock).find("pid ") == std::string::npos && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  const std::string holder_id = "pid " + std::to_string(holder) + " host " + host;
  ASSERT_EQ(contains(read_file(lock), holder_id), "") << read_file(log);

  const CmdResult second = run(train_cmd(out, "", 2));
  EXPECT_EQ(second.code, 1) << second.out;
  EXPECT_EQ(contains(last_line(second.out), "--output_dir " + out.string() + " is in use by another sft train (" +
                                                holder_id + "; lock " + lock.string() + ")"), "")
      << second.out;
  EXPECT_EQ(kill(holder, 0), 0) << "the holder should still be running:\n" << read_file(log);

  ASSERT_EQ(kill(holder, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(holder, &status, 0), holder);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << read_file(log);
  EXPECT_EQ(contains(read_file(lock), holder_id), "") << "the killed holder's pid stays in the file; the lock does not";

  const CmdResult third = run(train_cmd(out, "", 2));
  EXPECT_EQ(third.code, 0) << third.out;
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  EXPECT_EQ(read_file(lock), "") << "a run that ends normally clears what the lock file says";
}

TEST_F(CheckpointFaults, UnderMpirunRankZeroVerifiesAndEveryRankResumesFromItsChoice) {
  if (!sft::mpi_built()) GTEST_SKIP() << "this build has no MPI: " << sft::no_mpi_reason();
  if (run("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not found (apt-get install openmpi-bin)";
  const std::string mpirun = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                             "OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun --oversubscribe --timeout 240 -np 2 ";
  const std::string sharded = "--fsdp 'full_shard auto_wrap' --threads 1";
  const fs::path straight2 = root_ / "mpi_straight", out = root_ / "mpi_fault";
  auto cmd = [&](const fs::path& dir) {
    std::string c = train_cmd(dir, sharded);
    c.replace(c.find(" --threads 2"), 12, "");  // one thread per rank (given in `sharded`)
    return mpirun + c;
  };
  CmdResult r = run(cmd(straight2));
  ASSERT_EQ(r.code, 0) << r.out;
  fs::create_directories(out);
  for (const char* c : {"checkpoint-2", "checkpoint-4"}) fs::copy(straight2 / c, out / c, fs::copy_options::recursive);
  apply({"optimizer-rank-00001-of-00002.safetensors", Damage::flip, ""}, out / "checkpoint-4");  // rank 1's shard
  r = run(cmd(out));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string warning = "WARNING: checkpoint " + (out / "checkpoint-4").string() +
                              " is damaged, skipped for resume: optimizer-rank-00001-of-00002.safetensors: XXH3";
  const size_t first = r.out.find(warning);
  EXPECT_NE(first, std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(warning, first + 1), std::string::npos) << "only rank 0 verifies:\n" << r.out;
  const auto want = step_losses(straight2), got = step_losses(out);
  for (int64_t s = 3; s <= kSteps; ++s) {
    ASSERT_TRUE(got.count(s) && want.count(s)) << "step " << s;
    EXPECT_EQ(got.at(s), want.at(s)) << "step " << s;
  }
  const std::string last = "checkpoint-" + std::to_string(kSteps);
  for (const char* f : {"model.safetensors", "optimizer-rank-00000-of-00002.safetensors",
                        "optimizer-rank-00001-of-00002.safetensors"})
    EXPECT_TRUE(read_file(straight2 / last / f) == read_file(out / last / f)) << last << "/" << f;
}
