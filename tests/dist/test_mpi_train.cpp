// `mpirun -np N sft train` (CPU ranks over OpenMPI, FSDP's no_shard / DDP): two ranks with one
// micro-batch each train exactly what one process trains accumulating two, step by step and in
// the final weights; SIGUSR1 to mpirun makes every rank agree on one step, rank 0 save it, and the
// same command resume to the straight run's losses and weights bit for bit; ranks started with
// different options refuse with the option's name; a rank that fails alone (bad input seen only
// by it) ends the whole job with its rank named; --fsdp full_shard trains like one process and
// checkpoints (the model as one process writes it, an optimizer shard per rank; resumable by the
// same command and by one process); the modes not built yet are refused, not ignored. Faults: a
// rank killed (SIGKILL) ends the job naming it and the same command resumes bit for bit; a rank
// stopped (SIGSTOP) is caught by the other rank's collective watchdog after --ddp_timeout
// (dist/watchdog.h, also tested in-process). Every job is bounded by mpirun --timeout. Skips
// visibly where this build has no MPI or mpirun is missing.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <tuple>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "../cli/cli_test_util.h"
#include "mpi_test_util.h"
#include "dist/watchdog.h"
#include "dist/world.h"
#include "io/safetensors.h"

using namespace cli_test;
using namespace mpi_test;

namespace {

std::vector<double> losses(const fs::path& dir) {
  std::vector<double> out;
  std::istringstream in(read_file(dir / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("skipped")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Starts `cmd` (an mpirun line) in the background with its output in `log`; returns mpirun's pid.
pid_t start_job(const std::string& cmd, const fs::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd + " > " + log.string() + " 2>&1").c_str(), (char*)nullptr);
    _exit(127);
  }
  return pid;
}

// Waits up to `seconds` for the job to end; returns its wait status, or -1 after killing it.
int wait_job(pid_t pid, double seconds) {
  const Clock::time_point start = Clock::now();
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (seconds_since(start) > seconds) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status;
}

bool wait_for_file(const fs::path& f, double seconds) {
  const Clock::time_point start = Clock::now();
  while (!fs::exists(f) && seconds_since(start) < seconds) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return fs::exists(f);
}

// The pid of the sft process that is rank `rank` of the job writing to `out` (its command line
// names out; mpirun's environment has no OMPI_COMM_WORLD_RANK), or -1.
pid_t rank_pid(const fs::path& out, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline, environ;
    try {
      cmdline = read_file(e.path() / "cmdline");
      environ = read_file(e.path() / "environ");
    } catch (...) {
      continue;  // gone, or not ours
    }
    if (cmdline.find(out.string()) == std::string::npos || cmdline.find("train") == std::string::npos) continue;
    const std::string nul(1, '\0');
    if ((nul + environ + nul).find(nul + want + nul) != std::string::npos) return pid_t(std::stol(name));
  }
  return -1;
}

class MpiTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!why_no_mpi().empty()) return;
    root_ = temp_dir("mpi");
    make_micro_model(root_);
  }
  static void TearDownTestSuite() {
    if (!root_.empty()) fs::remove_all(root_);
  }
  void SetUp() override {
    if (const std::string why = why_no_mpi(); !why.empty()) GTEST_SKIP() << why;
  }
  static std::string train(const fs::path& out, const std::string& extra) {
    return kSft + " train --model_name_or_path " + (root_ / "model").string() + " --data_path " + kDummyData +
           " --output_dir " + out.string() +
           " --model_max_length 256 --learning_rate 1e-3 --max_steps 6 --save_strategy no --logging_steps 1"
           " --bf16 False --seed 7 --report_to none " + extra;
  }
  static inline fs::path root_;
};

}  // namespace

TEST_F(MpiTrain, TwoRanksTrainWhatOneProcessAccumulatingTrains) {
  const fs::path one = root_ / "one", two = root_ / "two";
  CmdResult r1 = run(train(one, "--per_device_train_batch_size 2 --gradient_accumulation_steps 2 --threads 2"));
  ASSERT_EQ(r1.code, 0) << r1.out;
  CmdResult r2 = run(mpirun(2) + train(two, "--per_device_train_batch_size 2 --gradient_accumulation_steps 1"));
  ASSERT_EQ(r2.code, 0) << r2.out;
  EXPECT_NE(r2.out.find("data parallel: 2 ranks"), std::string::npos) << r2.out;
  const std::vector<double> a = losses(one), b = losses(two);
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  EXPECT_EQ(a[0], b[0]);  // the first loss involves no reduction of gradients
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-7 * a[i]) << "step " << i + 1;
  // fp32 sums in another order (the all-reduce adds the two ranks' gradients): measured ~1e-9
  // relative on the losses; the weights after 6 AdamW steps at lr 1e-3 within 1e-6.
  EXPECT_LT(max_weight_diff(one, two), 1e-6);
  // Only rank 0 wrote: one metrics file, one final model.
  EXPECT_TRUE(fs::exists(two / "config.json"));
  EXPECT_TRUE(fs::exists(two / "trainer_state.json"));
}

TEST_F(MpiTrain, RanksWithDifferentOptionsRefuseNamingTheOption) {
  // MPMD launch: rank 1 gets another learning rate.
  const fs::path out = root_ / "mismatch";
  CmdResult r = run(mpirun(1) + train(out, "--per_device_train_batch_size 2") + " : -np 1 " +
                    train(out, "--per_device_train_batch_size 2 --learning_rate 2e-3"));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--learning_rate differs from rank 0's on rank(s) 1"), std::string::npos) << r.out;
}

TEST_F(MpiTrain, ARankThatFailsAloneEndsTheJobNamingIt) {
  const fs::path out = root_ / "fail";
  CmdResult r = run(mpirun(1) + train(out, "--per_device_train_batch_size 2") + " : -np 1 " +
                    train(out, "--per_device_train_batch_size 2").replace(
                        train(out, "").find(kDummyData), kDummyData.size(), "/nonexistent/data.json"));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("[rank 1/2] error: [train] --data_path /nonexistent/data.json"), std::string::npos) << r.out;
}

TEST_F(MpiTrain, ModesNotBuiltYetAreRefusedNotIgnored) {
  // The hybrid modes on GPU ranks are built (NCCL's node split, comm_nccl.cpp) but have not run on
  // GPUs: the words pass with a note; only a build or machine without a GPU stops them, at the device.
  const CmdResult g = run(mpirun(2) + train(root_ / "hybrid_gpu", "--per_device_train_batch_size 2 --max_steps 1 "
                                                                  "--device cuda --fsdp 'hybrid_shard auto_wrap'"));
  EXPECT_EQ(g.out.find("is not built yet"), std::string::npos) << g.out;
  EXPECT_NE(g.out.find("node split (ncclCommSplit) is built but has not run on GPUs yet"), std::string::npos)
      << g.out;
  if (g.code != 0) {
    EXPECT_NE(g.out.find("--device cuda"), std::string::npos) << g.out;
  }
  // GPU offload is built (test_offload.cpp): the words pass, a world of one included; only a build or
  // machine without a GPU stops it, at the device.
  const CmdResult o = run(mpirun(1) + train(root_ / "offload_gpu", "--per_device_train_batch_size 2 --max_steps 1 "
                                                                   "--device cuda --fsdp 'full_shard offload auto_wrap'"));
  EXPECT_EQ(o.out.find("is not built yet"), std::string::npos) << o.out;
  if (o.code != 0) {
    EXPECT_NE(o.out.find("--device cuda"), std::string::npos) << o.out;
  }
  // CPU ranks have nothing to move: rank 0 says so once and the run is full_shard's, loss for loss.
  const std::string two_steps = "--per_device_train_batch_size 2 --max_steps 2 --fsdp '";
  CmdResult r = run(mpirun(2) + train(root_ / "offload_cpu", two_steps + "full_shard offload auto_wrap'"));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string note = "note: --fsdp offload on CPU ranks: the model state is in host memory already";
  ASSERT_NE(r.out.find(note), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(note, r.out.find(note) + 1), std::string::npos) << "said more than once:\n" << r.out;
  EXPECT_NE(r.out.find("--fsdp full_shard:"), std::string::npos) << r.out;
  CmdResult f = run(mpirun(2) + train(root_ / "offload_cpu_ref", two_steps + "full_shard auto_wrap'"));
  ASSERT_EQ(f.code, 0) << f.out;
  EXPECT_EQ(step_losses(root_ / "offload_cpu"), step_losses(root_ / "offload_cpu_ref"));
}

// FSDP full_shard across 2 ranks trains what one process accumulating 2 micro-batches trains; its
// checkpoints hold the model as one process writes it (rank 0 writes it as the other rank feeds it
// unit by unit) and each rank's optimizer shard, so the same command resumes from one bit for bit
// and one process resumes from it too.
TEST_F(MpiTrain, FullShardTrainsWhatOneProcessTrainsAndCheckpointsInTheSameLayout) {
  const std::string steps = " --max_steps 6 --save_strategy steps --save_steps 3";
  const fs::path one = root_ / "fs_one", two = root_ / "fs_two", back = root_ / "fs_back";
  CmdResult r1 = run(train(one, "--per_device_train_batch_size 2 --gradient_accumulation_steps 2 --threads 2" + steps));
  ASSERT_EQ(r1.code, 0) << r1.out;
  const std::string sharded =
      mpirun(2) + train(two, "--per_device_train_batch_size 2 --fsdp 'full_shard auto_wrap'" + steps);
  CmdResult r2 = run(sharded);
  ASSERT_EQ(r2.code, 0) << r2.out;
  EXPECT_NE(r2.out.find("--fsdp full_shard"), std::string::npos) << r2.out;
  const std::map<int64_t, double> a = step_losses(one), b = step_losses(two);
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  // fp32 sums in another order (each rank's gradient reduce-scattered, vs accumulated in one
  // buffer): relative 1e-7 on the losses, 1e-6 on the weights after 6 AdamW steps at lr 1e-3.
  for (auto [step, loss] : a) EXPECT_NEAR(b.at(step), loss, 1e-7 * loss) << "step " << step;
  EXPECT_LT(max_weight_diff(one, two), 1e-6);
  // Rank 0 wrote the model files as one process does; each rank its optimizer shard
  // (test_mpi_checkpoint.cpp tests that layout).
  for (const char* f : {"checkpoint-3/optimizer-rank-00001-of-00002.safetensors", "checkpoint-6/model.safetensors",
                        "config.json"})
    EXPECT_TRUE(fs::exists(two / f)) << f;
  EXPECT_EQ(read_file(one / "checkpoint-3" / "model.safetensors").size(),
            read_file(two / "checkpoint-3" / "model.safetensors").size());

  // The same command resumes from checkpoint-3 (each rank takes its slices): bit for bit.
  fs::remove_all(two / "checkpoint-6");
  const std::string straight = read_file(two / "model.safetensors");
  CmdResult r3 = run(sharded);
  ASSERT_EQ(r3.code, 0) << r3.out;
  EXPECT_NE(r3.out.find("resumed from " + (two / "checkpoint-3").string()), std::string::npos) << r3.out;
  EXPECT_EQ(step_losses(two), b);
  EXPECT_TRUE(read_file(two / "model.safetensors") == straight);

  // One process resumes from the sharded run's checkpoint and trains as it would from its own.
  CmdResult r4 = run(train(back, "--per_device_train_batch_size 2 --gradient_accumulation_steps 2 --threads 2" + steps +
                                     " --resume_from_checkpoint " + (two / "checkpoint-3").string()));
  ASSERT_EQ(r4.code, 0) << r4.out;
  const std::map<int64_t, double> c = step_losses(back);
  for (int64_t step = 4; step <= 6; ++step) EXPECT_NEAR(c.at(step), a.at(step), 1e-7 * a.at(step)) << "step " << step;
  EXPECT_LT(max_weight_diff(one, back), 1e-6);
}

// shard_grad_op (ZeRO-2) over 3 ranks, whose units do not divide by 3 (padded shards): what one
// process accumulating 3 micro-batches trains (measured over 10 steps: losses 3e-9 relative,
// weights 3e-7, and full_shard bit-identical to it).
TEST_F(MpiTrain, ShardGradOpOverThreeRanksTrainsWhatOneProcessAccumulatingThreeTrains) {
  const fs::path one = root_ / "z2_one", three = root_ / "z2_three";
  CmdResult r1 = run(train(one, "--per_device_train_batch_size 2 --gradient_accumulation_steps 3 --threads 2"));
  ASSERT_EQ(r1.code, 0) << r1.out;
  CmdResult r3 = run(mpirun(3) + train(three, "--per_device_train_batch_size 2 --fsdp shard_grad_op"));
  ASSERT_EQ(r3.code, 0) << r3.out;
  EXPECT_NE(r3.out.find("memory per rank:"), std::string::npos) << r3.out;
  const std::map<int64_t, double> a = step_losses(one), b = step_losses(three);
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (auto [step, loss] : a) EXPECT_NEAR(b.at(step), loss, 1e-7 * loss) << "step " << step;
  EXPECT_LT(max_weight_diff(one, three), 1e-6);
}

// Under --bf16, full_shard all-gathers the layers and the head in bf16 (16-bit words over MPI) and
// trains bit for bit what DDP trains with the same flags (the GEMMs round the weights to bf16
// either way; norm weights, biases and the embedding stay fp32), and within bf16's tolerance of one
// process accumulating 2 micro-batches. --fsdp_reduce_dtype bf16 (MPI user ops adding bf16) in
// full_shard (reduce-scatter) and no_shard (all-reduce) stays within its tolerance of the fp32
// reduce and is not bit-identical to it (it is used). Any other value is refused by name.
TEST_F(MpiTrain, UnderBf16FullShardGathersInBf16AndABf16ReduceIsUsed) {
  auto bf16 = [](std::string cmd) { return cmd.replace(cmd.find("--bf16 False"), 12, "--bf16 True"); };
  const std::string flags = "--per_device_train_batch_size 2";
  const fs::path one = root_ / "b_one", ddp = root_ / "b_ddp", fs_ = root_ / "b_fs", fs_rd = root_ / "b_fs_rd",
                 ddp_rd = root_ / "b_ddp_rd";
  for (const auto& [dir, cmd] : std::vector<std::pair<fs::path, std::string>>{
           {one, train(one, flags + " --gradient_accumulation_steps 2 --threads 2")},
           {ddp, mpirun(2) + train(ddp, flags)},
           {fs_, mpirun(2) + train(fs_, flags + " --fsdp full_shard")},
           {fs_rd, mpirun(2) + train(fs_rd, flags + " --fsdp full_shard --fsdp_reduce_dtype bf16")},
           {ddp_rd, mpirun(2) + train(ddp_rd, flags + " --fsdp_reduce_dtype bf16")}}) {
    const CmdResult r = run(bf16(cmd));
    ASSERT_EQ(r.code, 0) << dir << "\n" << r.out;
    if (dir == fs_) {  // the start-up line says what the gathers move
      EXPECT_NE(r.out.find("(matrices in bf16, norms and biases fp32)"), std::string::npos) << r.out;
    }
  }
  const std::map<int64_t, double> a = step_losses(one), d = step_losses(ddp), f = step_losses(fs_),
                                   fr = step_losses(fs_rd), dr = step_losses(ddp_rd);
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(f, d);
  EXPECT_EQ(max_weight_diff(fs_, ddp), 0.0);
  // Against one process (bf16 GEMMs; fp32 gradient sums in another order, which can move a weight
  // across a bf16 rounding boundary, as DDP's do): measured losses 2.6e-6 relative, weights 1.6e-5
  // after 6 AdamW steps at lr 1e-3; asserted 1e-5 and 1e-4.
  double worst = 0;
  for (auto [step, loss] : a) worst = std::max(worst, std::fabs(f.at(step) - loss) / loss);
  std::printf("full_shard --bf16 vs one process: losses %.3g relative, weights %.3g\n", worst, max_weight_diff(fs_, one));
  EXPECT_LT(worst, 1e-5);
  EXPECT_LT(max_weight_diff(fs_, one), 1e-4);
  // bf16 reduce vs fp32 reduce (2 ranks: the same bf16 sums in both modes): measured losses 7.5e-6
  // relative, weights 1.3e-3 (a tiny summed gradient whose sign changes in bf16 moves its weight
  // by up to 2·lr per step); asserted 1e-4 and 1.2e-2 (6 steps × 2·lr).
  for (const auto& [got, want, name] : {std::tuple{&fr, &f, "full_shard"}, std::tuple{&dr, &d, "no_shard"}}) {
    ASSERT_EQ(got->size(), 6u) << name;
    double rel = 0;
    for (auto [step, loss] : *want) rel = std::max(rel, std::fabs(got->at(step) - loss) / loss);
    const double w = max_weight_diff(name == std::string("full_shard") ? fs_rd : ddp_rd, name == std::string("full_shard") ? fs_ : ddp);
    std::printf("%s --fsdp_reduce_dtype bf16 vs fp32: losses %.3g relative, weights %.3g\n", name, rel, w);
    EXPECT_LT(rel, 1e-4) << name;
    EXPECT_LT(w, 1.2e-2) << name;
    EXPECT_GT(w, 0.0) << name << ": bit-identical to the fp32 reduce, the bf16 reduce was not used";
  }
  const CmdResult bad = run(train(root_ / "b_bad", flags + " --fsdp_reduce_dtype fp16"));
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("--fsdp_reduce_dtype must be one of fp32, bf16, got 'fp16'"), std::string::npos) << bad.out;
}

TEST_F(MpiTrain, Sigusr1ToMpirunSavesOnEveryRankAndTheSameCommandResumesExactly) {
  const std::string flags = "--per_device_train_batch_size 2 --max_steps 12 --save_strategy steps --save_steps 2";
  const fs::path straight = root_ / "usr1_straight", out = root_ / "usr1", log = root_ / "usr1.log";
  auto cmd = [&](const fs::path& dir) { return mpirun(2) + train(dir, flags); };
  CmdResult r = run(cmd(straight));
  ASSERT_EQ(r.code, 0) << r.out;
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd(out) + " > " + log.string() + " 2>&1").c_str(), (char*)nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  while (!fs::exists(out / "checkpoint-2" / "checkpoint_complete.json") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGUSR1);  // mpirun forwards it to every rank
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string text = read_file(log);
  ASSERT_TRUE(WIFEXITED(status)) << text;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGUSR1) << text;
  const size_t at = text.find("interrupted by SIGUSR1 after step ");
  ASSERT_NE(at, std::string::npos) << "the job ended before the signal:\n" << text;
  const int64_t step = std::stoll(text.substr(at + 34));
  EXPECT_TRUE(fs::exists(out / ("checkpoint-" + std::to_string(step)) / "checkpoint_complete.json")) << text;

  r = run(cmd(out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("resumed from " + (out / ("checkpoint-" + std::to_string(step))).string()), std::string::npos)
      << r.out;
  const std::map<int64_t, double> a = step_losses(straight), b = step_losses(out);
  ASSERT_EQ(a.size(), 12u);
  EXPECT_EQ(a, b);  // bit for bit: the same ranks reduce in the same order
  EXPECT_TRUE(read_file(straight / "model.safetensors") == read_file(out / "model.safetensors"));
}

// A rank killed mid-run (after the first checkpoint, possibly in the middle of a save): mpirun
// notices at once and ends the job naming the rank; the newest complete checkpoint is intact
// (saves go to .tmp-checkpoint-<step>/ and are renamed when complete) and the same command
// resumes to the straight run's losses and weights bit for bit.
TEST_F(MpiTrain, SigkillOfOneRankEndsTheJobNamingItAndTheSameCommandResumesExactly) {
  const std::string flags =
      "--per_device_train_batch_size 2 --max_steps 12 --save_strategy steps --save_steps 2 --ddp_timeout 20";
  const fs::path straight = root_ / "kill_straight", out = root_ / "kill", log = root_ / "kill.log";
  auto cmd = [&](const fs::path& dir) { return mpirun(2) + train(dir, flags); };
  CmdResult r = run(cmd(straight));
  ASSERT_EQ(r.code, 0) << r.out;
  const pid_t job = start_job(cmd(out), log);
  const bool saved = wait_for_file(out / "checkpoint-2" / "checkpoint_complete.json", 240);
  pid_t victim = -1;
  for (const Clock::time_point t = Clock::now(); victim < 0 && seconds_since(t) < 10;) victim = rank_pid(out, 1);
  if (!saved || victim < 0) kill(job, SIGKILL);
  ASSERT_TRUE(saved) << read_file(log);
  ASSERT_GT(victim, 0) << "rank 1's process not found";
  const Clock::time_point killed = Clock::now();
  kill(victim, SIGKILL);
  const int status = wait_job(job, 60);
  const double took = seconds_since(killed);
  const std::string text = read_file(log);
  std::printf("SIGKILL of rank 1: the job ended %.2f s later\n", took);
  ASSERT_NE(status, -1) << "the job did not end within 60 s of the kill:\n" << text;
  ASSERT_TRUE(WIFEXITED(status)) << text;
  EXPECT_NE(WEXITSTATUS(status), 0) << text;
  EXPECT_LT(took, 20.0) << text;  // mpirun's teardown, well before --ddp_timeout
  EXPECT_FALSE(fs::exists(out / "model.safetensors")) << "the job finished before the kill:\n" << text;
  // OpenMPI 4.1: "mpirun noticed that process rank 1 with PID 0 on node <host> exited on signal 9 (Killed)."
  // (the PID it prints is 0 here).
  const size_t named = text.find("mpirun noticed that process rank 1 with PID ");
  ASSERT_NE(named, std::string::npos) << text;
  EXPECT_NE(text.find("exited on signal 9", named), std::string::npos) << text;

  r = run(cmd(out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("resumed from " + (out / "checkpoint-").string()), std::string::npos) << r.out;
  const std::map<int64_t, double> a = step_losses(straight), b = step_losses(out);
  ASSERT_EQ(a.size(), 12u);
  EXPECT_EQ(a, b);
  EXPECT_TRUE(read_file(straight / "model.safetensors") == read_file(out / "model.safetensors"));
}

// A rank that hangs (SIGSTOP: alive, silent): MPI notices nothing, so the other rank's watchdog
// ends it --ddp_timeout seconds into its wait, naming the collective and the reason, and mpirun
// tears the job down.
TEST_F(MpiTrain, AStoppedRankIsCaughtByTheWatchdogAfterDdpTimeout) {
  constexpr double kTimeout = 10;
  const fs::path out = root_ / "stop", log = root_ / "stop.log";
  const pid_t job = start_job(mpirun(2) + train(out, "--per_device_train_batch_size 2 --max_steps 400 "
                                                     "--save_strategy steps --save_steps 2 --ddp_timeout 10"),
                              log);
  const bool saved = wait_for_file(out / "checkpoint-2" / "checkpoint_complete.json", 240);
  pid_t victim = -1;
  for (const Clock::time_point t = Clock::now(); victim < 0 && seconds_since(t) < 10;) victim = rank_pid(out, 1);
  if (!saved || victim < 0) kill(job, SIGKILL);
  ASSERT_TRUE(saved) << read_file(log);
  ASSERT_GT(victim, 0) << "rank 1's process not found";
  const Clock::time_point stopped = Clock::now();
  kill(victim, SIGSTOP);
  const int status = wait_job(job, kTimeout + 60);
  const double took = seconds_since(stopped);
  kill(victim, SIGKILL);  // nothing left behind, whatever happened (a stopped process takes SIGKILL)
  kill(victim, SIGCONT);
  const std::string text = read_file(log);
  std::printf("SIGSTOP of rank 1: the job ended %.2f s later (--ddp_timeout %.0f)\n", took, kTimeout);
  ASSERT_NE(status, -1) << "the job did not end within --ddp_timeout + 60 s:\n" << text;
  ASSERT_TRUE(WIFEXITED(status)) << text;
  EXPECT_NE(WEXITSTATUS(status), 0) << text;
  const size_t at = text.find("[rank 0/2] error: [dist] collective ");
  ASSERT_NE(at, std::string::npos) << text;
  std::printf("%s\n", text.substr(at, text.find('\n', at) - at).c_str());
  EXPECT_NE(text.find("more than --ddp_timeout 10: another rank stopped responding (killed, stopped or stuck); "
                      "ending this job"),
            std::string::npos)
      << text;
  // Rank 0 may have been waiting already when rank 1 stopped; the watchdog looks once a second.
  EXPECT_GT(took, kTimeout - 2) << text;
  EXPECT_LT(took, kTimeout + 10) << text;
  EXPECT_TRUE(fs::exists(out / "checkpoint-2" / "checkpoint_complete.json"));
}

// An error on one rank mid-run: rank 0's first checkpoint write fails (a file-size limit set on the
// ranks only; mpirun's PMIx segments need more). The job ends at once with rank 0's error, long
// before --ddp_timeout, and the partial save is never renamed into a checkpoint.
TEST_F(MpiTrain, AnErrorOnOneRankMidRunEndsTheJobAtOnceNamingIt) {
  const fs::path out = root_ / "efbig";
  const Clock::time_point start = Clock::now();
  // 16000 blocks: 8 MB (dash, 512-byte blocks) or 16 MB (bash), below model.safetensors' 17 MB.
  CmdResult r = run(mpirun(2) + "sh -c 'ulimit -f 16000; exec " +
                    train(out, "--per_device_train_batch_size 2 --save_strategy steps --save_steps 2 --ddp_timeout 60") +
                    "'");
  const double took = seconds_since(start);
  std::printf("rank 0 failing alone mid-run: the job (start included) ended after %.2f s\n", took);
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("[rank 0/2] error: [safetensors] "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("File too large"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("error: [dist] collective"), std::string::npos) << r.out;  // not the watchdog
  EXPECT_LT(took, 40.0) << r.out;
  EXPECT_FALSE(fs::exists(out / "checkpoint-2")) << r.out;
}

TEST_F(MpiTrain, DdpTimeoutMustBePositive) {
  CmdResult r = run(train(root_ / "timeout0", "--ddp_timeout 0"));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--ddp_timeout must be > 0, got 0"), std::string::npos) << r.out;
}

// The watchdog in-process (death tests: it ends the process): a wait past the timeout ends it
// with status 1 and the collective named; many short waits that add up to more do not.
TEST(CollectiveWatchdog, AWaitPastTheTimeoutEndsTheProcessNamingTheCollective) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        sft::CollectiveWatchdog dog;
        dog.start(0.3);
        const auto w = dog.watch("all_reduce", "loss");
        std::this_thread::sleep_for(std::chrono::seconds(10));
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(1),
      "error: \\[dist\\] collective all_reduce 'loss' has waited [0-9]+ s, more than --ddp_timeout 0.3: another rank");
  EXPECT_EXIT(
      {
        sft::CollectiveWatchdog dog;
        dog.start(0.3);
        for (int i = 0; i < 10; ++i) {
          const auto w = dog.watch("barrier", "step");
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        std::fprintf(stderr, "all waits done\n");
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "all waits done");
}
