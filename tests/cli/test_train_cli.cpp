// `sft train` as a user runs it, on the shipped dummy conversations and a small `sft init` model:
// SIGKILL after a checkpoint then the same command again, and SIGINT/SIGTERM (save and exit),
// both reproduce an uninterrupted run bit for bit (per-step losses, fp32 weights and AdamW
// moments); a write failure while saving (a file-size limit, as a full disk) leaves the previous
// checkpoint intact and the run resumable; TensorBoard's own reader reads the event file back;
// missing inputs, an unwritable output_dir, a model too big for memory and a --model_max_length
// past a sliding window fail clearly, early.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"

using namespace cli_test;

namespace {

constexpr int kSteps = 24;

class TrainCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = temp_dir("train");
    CmdResult r = init_small_model(root_, model());
    ASSERT_EQ(r.code, 0) << r.out;
    straight_ = run(train_cmd(straight_dir()));
    ASSERT_EQ(straight_.code, 0) << straight_.out;
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static fs::path model() { return root_ / "model"; }
  static fs::path straight_dir() { return root_ / "straight"; }

  static std::string train_cmd(const fs::path& out, const std::string& extra = "") {
    return kSft + " train --model_name_or_path " + model().string() + " --data_path " + kDummyData +
           " --output_dir " + out.string() +
           " --model_max_length 256 --per_device_train_batch_size 4 --gradient_accumulation_steps 2"
           " --learning_rate 1e-3 --lr_scheduler_type cosine --warmup_ratio 0.1 --max_steps " +
           std::to_string(kSteps) + " --save_strategy steps --save_steps 2 --save_total_limit 2 --logging_steps 1"
           " --bf16 False --threads 2 --seed 7 " + extra;
  }

  // step -> loss from metrics.jsonl; a step logged twice (before a kill and after the resume)
  // keeps its last line.
  static std::map<int64_t, double> step_losses(const fs::path& out) {
    std::map<int64_t, double> m;
    std::istringstream in(read_file(out / "metrics.jsonl"));
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss") && !j.contains("skipped")) m[j["step"].get<int64_t>()] = j["loss"].get<double>();
    }
    return m;
  }

  // Same losses at every step and the same fp32 weights and AdamW moments at the end.
  static void expect_same_as_straight(const fs::path& out) {
    const auto a = step_losses(straight_dir()), b = step_losses(out);
    ASSERT_EQ(a.size(), size_t(kSteps));
    ASSERT_EQ(b.size(), size_t(kSteps));
    for (const auto& [step, loss] : a) EXPECT_EQ(b.at(step), loss) << "step " << step;
    const std::string last = "checkpoint-" + std::to_string(kSteps);
    for (const char* f : {"model.safetensors", "optimizer.safetensors"})
      EXPECT_TRUE(read_file(straight_dir() / last / f) == read_file(out / last / f)) << last << "/" << f;
  }

  // Starts the command in the background (exec'd, so signals reach sft itself); output to log.
  static pid_t spawn(const std::string& cmd, const fs::path& log) {
    const pid_t pid = fork();
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", ("exec " + cmd + " > " + log.string() + " 2>&1").c_str(), (char*)nullptr);
      _exit(127);
    }
    return pid;
  }

  static bool wait_for(const fs::path& p, double seconds) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!fs::exists(p)) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }

  static inline fs::path root_;
  static inline CmdResult straight_;
};

TEST_F(TrainCli, SigkillAfterACheckpointThenTheSameCommandResumesExactly) {
  const fs::path out = root_ / "killed";
  const pid_t pid = spawn(train_cmd(out), root_ / "killed.log");
  ASSERT_TRUE(wait_for(out / "checkpoint-2" / "checkpoint_complete.json", 300)) << read_file(root_ / "killed.log");
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the run ended before it could be killed:\n" << read_file(root_ / "killed.log");

  const CmdResult r = run(train_cmd(out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("resumed from " + (out / "checkpoint-").string()), std::string::npos) << r.out;
  for (const auto& e : fs::directory_iterator(out))  // a save cut short by the kill is cleaned up
    EXPECT_FALSE(e.path().filename().string().starts_with(".tmp-checkpoint")) << e.path();
  expect_same_as_straight(out);
  // metrics.jsonl holds every training step once, in order (the resumed run cut the killed run's
  // lines after its checkpoint before appending)
  std::vector<int64_t> steps;
  std::ifstream f(out / "metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("eval_loss") && !j.contains("skipped")) steps.push_back(j["step"]);
  }
  std::vector<int64_t> want(kSteps);
  for (int i = 0; i < kSteps; ++i) want[size_t(i)] = i + 1;
  EXPECT_EQ(steps, want);
}

TEST_F(TrainCli, SigintAndSigtermSaveACheckpointAndExitThenResumeExactly) {
  for (int sig : {SIGINT, SIGTERM}) {
    const fs::path out = root_ / ("signal" + std::to_string(sig)), log = root_ / ("signal" + std::to_string(sig) + ".log");
    const pid_t pid = spawn(train_cmd(out), log);
    ASSERT_TRUE(wait_for(out / "checkpoint-2" / "checkpoint_complete.json", 300)) << read_file(log);
    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    const std::string text = read_file(log);
    ASSERT_TRUE(WIFEXITED(status)) << "not a clean exit:\n" << text;
    EXPECT_EQ(WEXITSTATUS(status), 128 + sig) << text;
    const size_t at = text.find("interrupted by SIG");
    ASSERT_NE(at, std::string::npos) << text;
    const int64_t step = std::stoll(text.substr(text.find("after step ", at) + 11));
    EXPECT_LT(step, kSteps);
    EXPECT_TRUE(fs::exists(out / ("checkpoint-" + std::to_string(step)) / "checkpoint_complete.json")) << text;

    const CmdResult r = run(train_cmd(out));
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("resumed from " + (out / ("checkpoint-" + std::to_string(step))).string()), std::string::npos)
        << r.out;
    expect_same_as_straight(out);
  }
}

TEST_F(TrainCli, AWriteFailureWhileSavingKeepsThePreviousCheckpoint) {
  // The output_dir holds a checkpoint from step kSteps-2; saving the next one fails because no
  // file may exceed 1 MB (ulimit -f, 512-byte blocks in dash): the error names the file and the
  // cause, nothing partial is left, the old checkpoint is byte-identical, and the same command
  // without the limit then finishes exactly as the uninterrupted run.
  const fs::path out = root_ / "disk_full";
  const std::string prev = "checkpoint-" + std::to_string(kSteps - 2);
  fs::create_directories(out);
  fs::copy(straight_dir() / prev, out / prev, fs::copy_options::recursive);

  const CmdResult r = run("ulimit -f 2048; " + train_cmd(out));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("write failed: File too large"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(".tmp-checkpoint-" + std::to_string(kSteps)), std::string::npos) << r.out;
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    EXPECT_TRUE((!name.starts_with(".tmp-checkpoint") && !name.starts_with("checkpoint-")) || name == prev)
        << "left behind: " << e.path();
  }
  for (const auto& e : fs::directory_iterator(straight_dir() / prev))
    EXPECT_TRUE(read_file(e.path()) == read_file(out / prev / e.path().filename())) << e.path().filename();

  const CmdResult again = run(train_cmd(out));
  ASSERT_EQ(again.code, 0) << again.out;
  const auto a = step_losses(straight_dir()), b = step_losses(out);
  for (int64_t s = kSteps - 1; s <= kSteps; ++s) EXPECT_EQ(b.at(s), a.at(s)) << "step " << s;
  for (const char* f : {"model.safetensors", "optimizer.safetensors"})
    EXPECT_TRUE(read_file(straight_dir() / ("checkpoint-" + std::to_string(kSteps)) / f) ==
                read_file(out / ("checkpoint-" + std::to_string(kSteps)) / f))
        << f;
}

// The saved tokenizer is the one the run trained with, as HF Trainer saves it: model_max_length
// from --model_max_length (256 here, not the base model's 1e30), the pad token the loader pads with
// (unk, FastChat's choice for LLaMA), right padding; HF Transformers loads it with those values.
TEST_F(TrainCli, TheSavedTokenizerConfigIsTheOneTrainedWith) {
  for (const fs::path& dir : {straight_dir(), straight_dir() / fmt::format("checkpoint-{}", kSteps)}) {
    if (!fs::exists(dir / "tokenizer_config.json")) continue;  // the last checkpoint may be rotated away
    const auto cfg = nlohmann::json::parse(read_file(dir / "tokenizer_config.json"));
    EXPECT_EQ(cfg["model_max_length"], 256) << dir;
    EXPECT_EQ(cfg["pad_token"], cfg["unk_token"]) << dir;
    EXPECT_EQ(cfg["padding_side"], "right") << dir;
  }
  if (!fs::exists(kPython)) GTEST_SKIP() << "no test virtualenv (scripts/setup_venv.sh): HF load check skipped";
  const CmdResult r = run(kPython + " -c \"import sys; from transformers import AutoTokenizer; t = "
                          "AutoTokenizer.from_pretrained(sys.argv[1]); print(t.model_max_length, t.pad_token, "
                          "t.pad_token_id, t.padding_side)\" " + straight_dir().string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(last_line(r.out), "256 <unk> 0 right") << r.out;
}

// The end-of-run line names its two losses, and the logged one is metrics.jsonl's last train line.
TEST_F(TrainCli, TheDoneLineNamesItsLossesAndMatchesTheLog) {
  const std::string& out = straight_.out;
  const size_t at = out.find("last logged loss ");
  ASSERT_NE(at, std::string::npos) << out;
  ASSERT_NE(out.find("loss of the last step "), std::string::npos) << out;
  const double logged = std::stod(out.substr(at + std::string("last logged loss ").size()));
  nlohmann::json last;
  std::ifstream f(straight_dir() / "metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("eval_loss")) last = j;
  }
  ASSERT_TRUE(last.contains("loss"));
  EXPECT_NEAR(logged, last["loss"].get<double>(), 5e-5);
  EXPECT_NE(out.find(fmt::format("(step {}, mean over its logging window)", last["step"].get<int64_t>())),
            std::string::npos) << out;
}

// HF's --fsdp_config file: its activation_checkpointing turns gradient checkpointing on (the
// layers are recomputed: the same losses as the straight run), every key is noted once, and a
// parameter offload is noted on CPU (nothing to move) and refused on --device cuda before anything
// loads.
TEST_F(TrainCli, AnFsdpConfigFileIsHonouredOrNoted) {
  const fs::path cfg = root_ / "fsdp_config.json", off = root_ / "fsdp_offload.json";
  std::ofstream(cfg) << R"({"fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer", "activation_checkpointing": true,
                           "backward_prefetch": "backward_pre"})";
  std::ofstream(off) << R"({"fsdp_offload_params": true})";
  const fs::path out = root_ / "fsdp_config";
  const CmdResult r = run(train_cmd(out, "--fsdp_config " + cfg.string()));
  ASSERT_EQ(r.code, 0) << r.out;
  const size_t gc = r.out.find("  gradient_checkpointing ");
  ASSERT_NE(gc, std::string::npos) << r.out.substr(0, 3000);
  EXPECT_EQ(r.out.substr(gc, r.out.find('\n', gc) - gc).substr(r.out.find('\n', gc) - gc - 4), "True")
      << r.out.substr(gc, 80);
  EXPECT_NE(r.out.find("note: --fsdp_config transformer_layer_cls_to_wrap = \"LlamaDecoderLayer\": accepted"),
            std::string::npos) << r.out.substr(0, 3000);
  EXPECT_NE(r.out.find("note: --fsdp_config activation_checkpointing = true: honoured"), std::string::npos);
  EXPECT_NE(r.out.find("note: --fsdp_config backward_prefetch = \"backward_pre\": honoured"), std::string::npos);
  const auto want = step_losses(straight_dir()), got = step_losses(out);
  ASSERT_EQ(got.size(), want.size());
  for (auto [step, loss] : want) EXPECT_NEAR(got.at(step), loss, 1e-6 * loss) << "step " << step;
  const CmdResult o = run(train_cmd(root_ / "fsdp_offload", "--fsdp_config " + off.string() + " --device cuda"));
  EXPECT_EQ(o.code, 1);
  EXPECT_NE(o.out.find("'fsdp_offload_params' true on --device cuda asks for parameter offload"), std::string::npos)
      << o.out;
  EXPECT_EQ(o.out.find("step 1"), std::string::npos) << o.out;
  const CmdResult c = run(train_cmd(root_ / "fsdp_offload_cpu", "--fsdp_config " + off.string()));
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_NE(c.out.find("note: --fsdp_config offload_params = true: CPU ranks: the model state is in host memory"),
            std::string::npos) << c.out;
  const auto cpu = step_losses(root_ / "fsdp_offload_cpu");  // nothing moved: the straight run's losses
  ASSERT_EQ(cpu.size(), want.size());
  for (auto [step, loss] : want) EXPECT_EQ(cpu.at(step), loss) << "step " << step;
}

// Output to a pipe (stdout buffered, stderr not): the resolved configuration (stdout) still comes
// before the data summary (stderr) that follows it.
TEST_F(TrainCli, PipedOutputKeepsStdoutAndStderrInOrder) {
  const size_t config = straight_.out.find("resolved configuration"), data = straight_.out.find("[data]");
  ASSERT_NE(config, std::string::npos) << straight_.out;
  ASSERT_NE(data, std::string::npos) << straight_.out;
  EXPECT_LT(config, data) << straight_.out.substr(0, 2000);
}

TEST_F(TrainCli, OutputsAreAnHfDirectoryAndTensorBoardReadsTheEvents) {
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json", "tokenizer.model",
                        "trainer_state.json", "metrics.jsonl", "loss.svg"})
    EXPECT_TRUE(fs::exists(straight_dir() / f)) << f;
  auto state = nlohmann::json::parse(read_file(straight_dir() / "trainer_state.json"));
  EXPECT_EQ(state["global_step"], kSteps);
  EXPECT_TRUE(nlohmann::json::parse(read_file(straight_dir() / "config.json"))["use_cache"].get<bool>());

  if (!fs::exists(kPython)) GTEST_SKIP() << "no test virtualenv (scripts/setup_venv.sh): TensorBoard check skipped";
  std::vector<fs::path> events;
  for (const auto& e : fs::recursive_directory_iterator(straight_dir() / "runs"))
    if (e.path().filename().string().starts_with("events.out.tfevents.")) events.push_back(e.path());
  ASSERT_EQ(events.size(), 1u);
  const CmdResult r = run(kPython + " " + kRoot + "/tools/read_tensorboard.py " + events[0].string());
  ASSERT_EQ(r.code, 0) << r.out;  // the loader checks both CRCs of every record
  std::map<int64_t, double> tb_loss;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("scalars") && j["scalars"].contains("train/loss"))
      tb_loss[j["step"].get<int64_t>()] = j["scalars"]["train/loss"].get<double>();
  }
  const auto jsonl = step_losses(straight_dir());
  ASSERT_EQ(tb_loss.size(), jsonl.size());
  for (const auto& [step, loss] : jsonl) EXPECT_FLOAT_EQ(float(tb_loss.at(step)), float(loss)) << "step " << step;
}

// MFU counts the FLOPs a run really does (packed sequence lengths, the LM head on target rows)
// against the peak of the instruction its GEMMs run on: never above 100%, in fp32 and bf16. No
// clamping hides a bug: the value is the logged one.
TEST_F(TrainCli, MfuOfRealRunsIsPositiveAndAtMostOne) {
  const fs::path bf16_dir = root_ / "mfu_bf16";
  CmdResult r = run(train_cmd(bf16_dir, "--bf16 True --max_steps 4 --save_strategy no"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("MFU peak: "), std::string::npos) << r.out;
  for (const fs::path& dir : {straight_dir(), bf16_dir}) {
    std::istringstream in(read_file(dir / "metrics.jsonl"));
    int lines = 0;
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (!j.contains("mfu")) continue;
      ++lines;
      EXPECT_GT(j["mfu"].get<double>(), 0.0) << dir << ": " << line;
      EXPECT_LE(j["mfu"].get<double>(), 1.0) << dir << ": " << line;
    }
    EXPECT_GT(lines, 0) << dir;
  }
  for (const char* dtype : {"fp32", "bf16"}) {
    CmdResult b = run(kSft + " bench --preset tiny --steps 1 --warmup 1 --json --dtype " + dtype);
    ASSERT_EQ(b.code, 0) << b.out;
    const auto j = nlohmann::json::parse(last_line(b.out));
    EXPECT_GT(j["mfu"].get<double>(), 0.0) << dtype;
    EXPECT_LE(j["mfu"].get<double>(), 1.0) << dtype << ": " << j.dump();
    EXPECT_FALSE(j["peak_how"].get<std::string>().empty());
  }
}

TEST_F(TrainCli, MissingInputsFailClearlyBeforeAnythingIsLoaded) {
  const fs::path out = root_ / "missing";
  CmdResult r = run(kSft + " train --model_name_or_path /nonexistent/model --data_path " + kDummyData +
                    " --output_dir " + out.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--model_name_or_path /nonexistent/model: no such directory"), std::string::npos) << r.out;
  r = run(kSft + " train --model_name_or_path " + kTokenizer + " --data_path " + kDummyData + " --output_dir " +
          out.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("no config.json in it"), std::string::npos) << r.out;
  r = run(kSft + " train --model_name_or_path " + model().string() + " --data_path /nonexistent/data.json --output_dir " +
          out.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--data_path /nonexistent/data.json: no such file"), std::string::npos) << r.out;
  r = run(train_cmd(out, "--eval_data_path /nonexistent/eval.json"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--eval_data_path /nonexistent/eval.json: no such file"), std::string::npos) << r.out;
  r = run(kSft + " train --data_path " + kDummyData + " --output_dir " + out.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--model_name_or_path is required"), std::string::npos) << r.out;
}

TEST_F(TrainCli, AnUnwritableOutputDirFailsBeforeTraining) {
  // A path under a regular file can never be created, whoever runs the test.
  const fs::path file = root_ / "a_file";
  std::ofstream(file) << "x";
  CmdResult r = run(train_cmd(file / "out"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--output_dir " + (file / "out").string() + ": cannot create it"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("step 1"), std::string::npos) << r.out;

  // A directory this user may not write to. root ignores permissions, so as root the run is made
  // as user nobody (setpriv), which may read the model and data but not write to root's directory.
  const fs::path ro = root_ / "read_only";
  fs::create_directories(ro);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                          fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  // The data is copied beside the model (the clone may sit in a directory only root can enter).
  const std::string as_other = geteuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
  const fs::path data = root_ / "dummy_conversation.json";
  fs::copy_file(kDummyData, data, fs::copy_options::overwrite_existing);
  if (!as_other.empty() && run(as_other + kSft + " --help").code != 0) {
    fs::permissions(ro, fs::perms::owner_all);
    GTEST_SKIP() << "user nobody cannot run " << kSft << " (its directory is closed to others): unwritable "
                 << "output_dir not checked";
  }
  std::string cmd = train_cmd(ro);
  cmd.replace(cmd.find(kDummyData), kDummyData.size(), data.string());
  r = run(as_other + cmd);
  fs::permissions(ro, fs::perms::owner_all);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--output_dir " + ro.string() + " is not writable: Permission denied"), std::string::npos)
      << r.out;
}

TEST_F(TrainCli, AModelTooBigForMemoryFailsBeforeTraining) {
  // config.json of a ~70B model and no weights at all: the check must stop the run first.
  const fs::path big = root_ / "huge_model";
  fs::create_directories(big);
  auto cfg = nlohmann::json::parse(kSmallConfig);
  cfg["hidden_size"] = 8192;
  cfg["intermediate_size"] = 28672;
  cfg["num_hidden_layers"] = 80;
  cfg["num_attention_heads"] = 64;
  cfg["num_key_value_heads"] = 8;
  std::ofstream(big / "config.json") << cfg.dump();
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    fs::copy_file(fs::path(kTokenizer) / f, big / f);
  const CmdResult r = run(kSft + " train --model_name_or_path " + big.string() + " --data_path " + kDummyData +
                          " --output_dir " + (root_ / "huge_out").string() + " --model_max_length 256");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("not enough memory: this run needs about"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("weights, gradients and AdamW moments alone do not fit"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(root_ / "huge_out" / "metrics.jsonl"));
}

// Mistral-7B-v0.1-style config (sliding_window below the context), no weights: sft trains only
// sequences up to the window, so a longer --model_max_length is refused before anything is loaded.
TEST_F(TrainCli, AModelMaxLengthPastTheSlidingWindowFailsBeforeLoading) {
  const fs::path dir = root_ / "mistral_model";
  fs::create_directories(dir);
  auto cfg = nlohmann::json::parse(kSmallConfig);
  cfg["architectures"] = {"MistralForCausalLM"};
  cfg["model_type"] = "mistral";
  cfg["sliding_window"] = 128;
  std::ofstream(dir / "config.json") << cfg.dump();
  const CmdResult r = run(kSft + " train --model_name_or_path " + dir.string() + " --data_path " + kDummyData +
                          " --output_dir " + (root_ / "mistral_out").string() + " --model_max_length 256");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--model_max_length 256 is longer than sliding_window 128 in " + dir.string() +
                       "/config.json"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("use --model_max_length 128 or less"), std::string::npos) << r.out;
}

}  // namespace
