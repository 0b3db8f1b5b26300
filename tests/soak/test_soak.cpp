// Soak: a small LLaMA trained for many steps through the sft binary as a user runs it (packing over
// samples of varied lengths into 64-token rows, evaluation, a checkpoint every 100 steps with
// --save_total_limit 2), watched from outside: /proc/<pid>/status (VmRSS, VmHWM) and /proc/<pid>/fd
// polled every few milliseconds, the output_dir listed at each poll, the final peak from wait4's
// rusage. Peak RSS after the warm-up step and at the end differ by < 2%, the descriptor count does
// not grow, at most 3 checkpoints exist at any time (the new one before rotation), and the
// output_dir ends holding exactly the final model, its logs and the last two checkpoints.
// CI runs 1,000 steps; SFT_SOAK_STEPS=10000 runs the full soak (the curve is printed either way);
// SFT_SOAK_BF16=False soaks the fp32 GEMM route instead of the bf16 one.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "../cli/cli_test_util.h"

using namespace cli_test;

namespace {

// 2 layers, hidden 32, tied embeddings: ~1M parameters with the LLaMA-2 tokenizer's 32000 ids, so
// a checkpoint is ~13 MB and a step a few milliseconds.
const char* kSoakConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "vocab_size": 32000, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
  "initializer_range": 0.02, "torch_dtype": "float32"})";

// ShareGPT conversations of 1 to 3 turns, questions of 1 to 10 words, answers of 1 to 30: samples
// from a few tokens to longer than a row, so packing fills rows from varied lengths (and truncates
// some).
void write_conversations(const fs::path& path, int count, uint32_t seed) {
  static const char* words[] = {"the", "model", "learns", "to", "answer", "short", "questions", "about",
                                "llamas", "and", "tokens", "with", "care", "while", "packing", "rows"};
  std::mt19937 rng(seed);
  auto text = [&](int max_words) {
    std::string s;
    const int n = 1 + int(rng() % uint32_t(max_words));
    for (int i = 0; i < n; ++i) s += std::string(i ? " " : "") + words[rng() % 16];
    return s;
  };
  nlohmann::json all = nlohmann::json::array();
  for (int i = 0; i < count; ++i) {
    nlohmann::json conv = nlohmann::json::array();
    const int turns = 1 + int(rng() % 3);
    for (int t = 0; t < turns; ++t) {
      conv.push_back({{"from", "human"}, {"value", text(10)}});
      conv.push_back({{"from", "gpt"}, {"value", text(30)}});
    }
    all.push_back({{"id", "soak_" + std::to_string(i)}, {"conversations", conv}});
  }
  std::ofstream(path) << all.dump(1);
}

struct Sample {
  int64_t step;  // the last step metrics.jsonl logged when sampled
  long rss_kb, hwm_kb, fds;
};

long status_kb(const std::string& status, const std::string& key) {
  const size_t at = status.find(key + ":");
  return at == std::string::npos ? -1 : std::atol(status.c_str() + at + key.size() + 1);
}

long count_fds(pid_t pid) {
  std::error_code ec;
  long n = 0;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec); !ec && it != fs::directory_iterator();
       it.increment(ec))
    ++n;
  return ec ? -1 : n;
}

// The step of metrics.jsonl's last complete line that has one (read from `offset` on).
int64_t last_logged_step(const fs::path& metrics, std::streamoff& offset, int64_t step) {
  std::ifstream f(metrics, std::ios::binary);
  if (!f) return step;
  f.seekg(offset);
  std::string line;
  while (std::getline(f, line)) {
    if (f.eof()) break;  // a line still being written
    offset += std::streamoff(line.size() + 1);
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step") && j.contains("loss") && !j.contains("eval_loss")) step = j["step"].get<int64_t>();
  }
  return step;
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

}  // namespace

TEST(Soak, MemoryAndDescriptorsStayFlatAndRotationKeepsTwoCheckpoints) {
  const int steps = env_int("SFT_SOAK_STEPS", 1000);
  const int warm = std::min(500, steps / 2);  // "after step 500"; half of a shorter run
  const int time_limit_s = env_int("SFT_SOAK_TIMEOUT_S", steps <= 1000 ? 400 : 6 * 3600);
  ASSERT_GE(steps, 400);
  ASSERT_EQ(steps % 100, 0);
  const fs::path root = temp_dir("soak");
  const fs::path model = root / "model", out = root / "out";
  fs::create_directories(root);
  std::ofstream(root / "soak.json") << kSoakConfig;
  CmdResult r = run(kSft + " init --preset " + (root / "soak.json").string() + " --dtype fp32 --tokenizer " +
                    kTokenizer + " --output_dir " + model.string() + " --seed 3");
  ASSERT_EQ(r.code, 0) << r.out;
  write_conversations(root / "train.json", 400, 1);
  write_conversations(root / "eval.json", 24, 2);

  const std::vector<std::string> args = {
      kSft, "train", "--model_name_or_path", model.string(), "--data_path", (root / "train.json").string(),
      "--eval_data_path", (root / "eval.json").string(), "--output_dir", out.string(),
      "--model_max_length", "64", "--packing", "True", "--per_device_train_batch_size", "2",
      "--gradient_accumulation_steps", "1", "--max_steps", std::to_string(steps), "--learning_rate", "1e-3",
      "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.03", "--logging_steps", "10",
      "--evaluation_strategy", "steps", "--eval_steps", "50", "--save_strategy", "steps", "--save_steps", "100",
      "--save_total_limit", "2", "--bf16", std::getenv("SFT_SOAK_BF16") ? std::getenv("SFT_SOAK_BF16") : "True", "--threads", "1", "--seed", "5"};
  const fs::path log = root / "train.log";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::close(fd);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    _exit(127);
  }

  std::vector<Sample> samples;
  size_t most_checkpoints = 0;
  std::string most_checkpoints_at;
  std::streamoff offset = 0;
  int64_t step = 0;
  int status = 0;
  rusage usage{};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(time_limit_s);
  const std::string proc = "/proc/" + std::to_string(pid);
  for (;;) {
    const pid_t w = ::wait4(pid, &status, WNOHANG, &usage);
    if (w == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::wait4(pid, &status, 0, &usage);
      FAIL() << "the soak ran past " << time_limit_s << " s at step " << step << "; log: " << log;
    }
    step = last_logged_step(out / "metrics.jsonl", offset, step);
    const std::string st = read_file(proc + "/status");
    const long fds = count_fds(pid);
    if (status_kb(st, "VmRSS") > 0 && fds > 0) samples.push_back({step, status_kb(st, "VmRSS"), status_kb(st, "VmHWM"), fds});
    std::error_code ec;
    size_t checkpoints = 0;
    std::string listing;
    for (auto it = fs::directory_iterator(out, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
      const std::string n = it->path().filename().string();
      if (n.starts_with("checkpoint-")) ++checkpoints, listing += n + " ";
    }
    if (checkpoints > most_checkpoints) most_checkpoints = checkpoints, most_checkpoints_at = listing;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const std::string output = read_file(log);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n" << output;

  // The curve, every tenth of the run: the first sample at or after each step.
  std::printf("soak: %d steps, %zu samples; step  VmRSS  VmHWM (KiB)  open fds\n", steps, samples.size());
  std::map<int64_t, Sample> first_at;
  for (const Sample& s : samples) first_at.try_emplace(s.step, s);
  for (int64_t at = 0; at <= steps; at += steps / 10) {
    auto it = first_at.lower_bound(std::max<int64_t>(at, 1));
    if (it != first_at.end())
      std::printf("soak:   %6lld  %6ld  %6ld  %3ld\n", (long long)it->first, it->second.rss_kb, it->second.hwm_kb, it->second.fds);
  }
  std::printf("soak:   end     peak (wait4 ru_maxrss) %ld KiB\n", usage.ru_maxrss);

  // Peak RSS: at the warm-up step and at the end (the kernel's own figure for the whole run).
  auto warm_it = std::find_if(samples.begin(), samples.end(), [&](const Sample& s) { return s.step >= warm; });
  ASSERT_NE(warm_it, samples.end()) << "no sample at step " << warm;
  const double hwm_warm = double(warm_it->hwm_kb), hwm_end = double(usage.ru_maxrss);
  std::printf("soak: peak RSS at step %lld: %.0f KiB; at the end: %.0f KiB (%+.2f%%)\n", (long long)warm_it->step,
              hwm_warm, hwm_end, 100.0 * (hwm_end - hwm_warm) / hwm_warm);
  EXPECT_LT(std::abs(hwm_end - hwm_warm) / hwm_warm, 0.02)
      << "peak RSS " << hwm_warm << " KiB at step " << warm_it->step << ", " << hwm_end << " KiB at the end";

  // Descriptors: the count while training (its most frequent value) is the same after the warm-up
  // as before it, and the most seen at once (a save in flight: a sample may or may not catch its
  // files open) at most 2 more; a descriptor left open per save, evaluation or log line would
  // raise the usual count.
  std::map<long, int> early, late;
  long early_max = 0, late_max = 0;
  for (const Sample& s : samples) {
    if (s.step < 10) continue;  // loading
    auto [m, mx] = s.step < warm ? std::tie(early, early_max) : std::tie(late, late_max);
    ++m[s.fds];
    mx = std::max(mx, s.fds);
  }
  auto mode = [](const std::map<long, int>& m) {
    return std::max_element(m.begin(), m.end(), [](auto& a, auto& b) { return a.second < b.second; })->first;
  };
  ASSERT_FALSE(early.empty());
  ASSERT_FALSE(late.empty());
  std::printf("soak: open fds before step %d: usual %ld, max %ld; after: usual %ld, max %ld\n", warm, mode(early),
              early_max, mode(late), late_max);
  EXPECT_EQ(mode(late), mode(early));
  EXPECT_LE(late_max, early_max + 2);

  // Rotation: never more than the two kept and the one just saved.
  EXPECT_LE(most_checkpoints, 3u) << most_checkpoints_at;

  // The output_dir: the final HF model (weights, config, generation config, the tokenizer as
  // trained), the run's trainer_state, logs and plot, the lock file, and the last two checkpoints.
  std::set<std::string> want = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.model",
                                "tokenizer_config.json", "special_tokens_map.json", "trainer_state.json",
                                "metrics.jsonl", "loss.svg", ".sft.lock", "runs",
                                "checkpoint-" + std::to_string(steps - 100), "checkpoint-" + std::to_string(steps)};
  EXPECT_EQ(names_in(out), want);
  const std::set<std::string> checkpoint = {"config.json", "generation_config.json", "model.safetensors",
                                            "optimizer.safetensors", "trainer_state.json", "checkpoint_complete.json",
                                            "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"};
  for (int at : {steps - 100, steps}) EXPECT_EQ(names_in(out / ("checkpoint-" + std::to_string(at))), checkpoint) << at;
  EXPECT_EQ(names_in(out / "runs").size(), 1u);  // one TensorBoard event file

  // metrics.jsonl: every logging step once, every evaluation once.
  std::map<int64_t, int> logged, evaluated;
  std::istringstream in(read_file(out / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("eval_loss")) ++evaluated[j["step"].get<int64_t>()];
    else if (j.contains("loss")) ++logged[j["step"].get<int64_t>()];
  }
  EXPECT_EQ(logged.size(), size_t(steps / 10));
  EXPECT_EQ(evaluated.size(), size_t(steps / 50));
  for (const auto& [s, n] : logged) EXPECT_EQ(n, 1) << "step " << s;
  for (const auto& [s, n] : evaluated) EXPECT_EQ(n, 1) << "eval at step " << s;
  if (!HasFailure()) fs::remove_all(root);
}
