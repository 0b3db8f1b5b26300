// `mpirun -np N sft train` (CPU ranks over OpenMPI, FSDP's no_shard / DDP): two ranks with one
// micro-batch each train exactly what one process trains accumulating two, step by step and in
// the final weights; SIGUSR1 to mpirun makes every rank agree on one step, rank 0 save it, and the
// same command resume to the straight run's losses and weights bit for bit; ranks started with
// different options refuse with the option's name; a rank that fails alone (bad input seen only
// by it) ends the whole job with its rank named; --fsdp full_shard trains like one process and
// checkpoints in the one-process layout (resumable by the same command and by one process); the
// modes not built yet are refused, not ignored. Every job is bounded by mpirun --timeout.
// Skips visibly where this build has no MPI or mpirun is missing.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <map>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "../cli/cli_test_util.h"
#include "dist/world.h"
#include "io/safetensors.h"

using namespace cli_test;

namespace {

const char* kConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "vocab_size": 32000, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2,
  "initializer_range": 0.02, "torch_dtype": "float32"})";

// mpirun as root in a container: allowed explicitly, shared-memory copies without CMA, ranks may
// outnumber cores, and a hang fails the job instead of blocking CI.
std::string mpirun(int np) {
  // env, not shell assignments: `exec env ... mpirun` keeps mpirun's pid for signals.
  return "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none "
         "mpirun --oversubscribe --timeout 240 -np " + std::to_string(np) + " ";
}

std::vector<double> losses(const fs::path& dir) {
  std::vector<double> out;
  std::istringstream in(read_file(dir / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("skipped")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

// Step → loss of a run's metrics.jsonl (a resumed run carries the history of the one it resumed).
std::map<int64_t, double> step_losses(const fs::path& dir) {
  std::map<int64_t, double> m;
  std::istringstream in(read_file(dir / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("skipped")) m[j["step"].get<int64_t>()] = j["loss"].get<double>();
  }
  return m;
}

double max_weight_diff(const fs::path& a, const fs::path& b) {
  sft::SafetensorsFile wa((a / "model.safetensors").string()), wb((b / "model.safetensors").string());
  EXPECT_EQ(wa.tensors().size(), wb.tensors().size());
  double max_diff = 0;
  for (const auto& t : wa.tensors()) {
    const auto& u = wb.at(t.name);
    EXPECT_EQ(t.nbytes(), u.nbytes()) << t.name;
    const float* x = reinterpret_cast<const float*>(t.data);
    const float* y = reinterpret_cast<const float*>(u.data);
    for (int64_t i = 0; i < std::min(t.numel(), u.numel()); ++i) max_diff = std::max(max_diff, double(std::fabs(x[i] - y[i])));
  }
  return max_diff;
}

class MpiTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!sft::mpi_built() || run("command -v mpirun").code != 0) return;
    root_ = temp_dir("mpi");
    fs::create_directories(root_);
    std::ofstream(root_ / "small.json") << kConfig;
    const CmdResult r = run(kSft + " init --preset " + (root_ / "small.json").string() + " --dtype fp32 --tokenizer " +
                            kTokenizer + " --output_dir " + (root_ / "model").string() + " --seed 11");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() {
    if (!root_.empty()) fs::remove_all(root_);
  }
  void SetUp() override {
    if (!sft::mpi_built()) GTEST_SKIP() << "this build has no MPI: " << sft::no_mpi_reason();
    if (run("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not found (apt-get install openmpi-bin)";
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
  for (const char* mode : {"hybrid_shard auto_wrap", "full_shard offload auto_wrap"}) {
    CmdResult r = run(mpirun(2) + train(root_ / "not_built", std::string("--per_device_train_batch_size 2 --fsdp '") +
                                                              mode + "'"));
    EXPECT_NE(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("is not built yet"), std::string::npos) << r.out;
  }
}

// FSDP full_shard across 2 ranks trains what one process accumulating 2 micro-batches trains; its
// checkpoints are the one-process layout (rank 0 writes them as the other rank feeds it unit by
// unit), so the same command resumes from one bit for bit and one process resumes from it too.
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
  // Rank 0 wrote the checkpoints and the final model in the one-process layout.
  for (const char* f : {"checkpoint-3/optimizer.safetensors", "checkpoint-6/model.safetensors", "config.json"})
    EXPECT_TRUE(fs::exists(two / f)) << f;
  EXPECT_EQ(read_file(one / "checkpoint-3" / "optimizer.safetensors").size(),
            read_file(two / "checkpoint-3" / "optimizer.safetensors").size());

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
