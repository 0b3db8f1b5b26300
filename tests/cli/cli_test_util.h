// Shared helpers of the CLI tests: run the sft binary through the shell and capture its output,
// per-test temporary directories, and the paths of the repo's own assets.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace cli_test {

namespace fs = std::filesystem;

struct CmdResult {
  int code;         // exit status, or 128 + signal when killed
  std::string out;  // stdout and stderr together
};

inline CmdResult run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status), out};
}

inline std::string last_line(const std::string& s) {
  size_t end = s.find_last_not_of('\n');
  size_t start = s.rfind('\n', end);
  return s.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
}

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

const std::string kSft = SFT_BINARY;
const std::string kRoot = SFT_SOURCE_DIR;
const std::string kTokenizer = kRoot + "/assets/tokenizer/llama2";
const std::string kDummyData = kRoot + "/assets/data/dummy_conversation.json";
const std::string kPython = kRoot + "/.venv/bin/python";

inline fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("sft_test_cli_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

// A small LLaMA (2 layers, dim 64, GQA) with the LLaMA-2 tokenizer: fast steps, real files.
inline const char* kSmallConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "vocab_size": 32000, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2,
  "initializer_range": 0.02, "torch_dtype": "float32"})";

// `sft init` of that model (fp32, seed 11) into `model`, its config written beside it in `root`.
inline CmdResult init_small_model(const fs::path& root, const fs::path& model) {
  fs::create_directories(root);
  std::ofstream(root / "small.json") << kSmallConfig;
  return run(kSft + " init --preset " + (root / "small.json").string() + " --dtype fp32 --tokenizer " + kTokenizer +
             " --output_dir " + model.string() + " --seed 11");
}

}  // namespace cli_test
