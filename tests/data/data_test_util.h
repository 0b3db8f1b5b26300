// Shared helpers of the data tests: paths (repo, ../shared, the shipped LLaMA-2 tokenizer, the
// test virtualenv), temporary files, running a command, and a copy of a tokenizer directory with
// `legacy` set either way (for FastChat's two LLaMA tokenizer behaviours).
#pragma once
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace data_test {

namespace fs = std::filesystem;

inline const std::string kRoot = SFT_SOURCE_DIR;
inline const std::string kSft = SFT_BINARY;
inline const std::string kShared = kRoot + "/../shared";
inline const std::string kLlama2 = kRoot + "/assets/tokenizer/llama2";
inline const std::string kLlama3 = kShared + "/tokenizers/llama3";
inline const std::string kPython = kRoot + "/.venv/bin/python";
inline const fs::path kBuildDir = fs::path(SFT_BINARY).parent_path();

inline bool have_shared() { return fs::is_directory(kShared + "/data"); }

inline std::string dummy_data() {
  const std::string shipped = kRoot + "/assets/data/dummy_conversation.json";
  return fs::exists(shipped) ? shipped : kShared + "/data/dummy_conversation.json";
}

struct RunResult {
  int code;
  std::string out;  // stdout and stderr together
};

inline RunResult run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {127, "popen failed"};
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, out};
}

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

// A fresh directory under the build tree for one test.
inline fs::path temp_dir(const std::string& name) {
  fs::path d = kBuildDir / "data-test" / (name + "-" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A copy of the LLaMA-2 tokenizer directory with tokenizer_config.json "legacy" set to `legacy`.
inline std::string llama2_with_legacy(bool legacy) {
  fs::path d = kBuildDir / "data-test" / (legacy ? "llama2-legacy" : "llama2-nonlegacy");
  fs::create_directories(d);
  for (const char* f : {"tokenizer.model", "special_tokens_map.json"})
    fs::copy_file(fs::path(kLlama2) / f, d / f, fs::copy_options::overwrite_existing);
  nlohmann::json cfg = nlohmann::json::parse(read_file(fs::path(kLlama2) / "tokenizer_config.json"));
  cfg["legacy"] = legacy;
  write_file(d / "tokenizer_config.json", cfg.dump(2));
  return d.string();
}

// The LLaMA-3 tokenizer of ../shared with its merges rebuilt from the vocabulary ranks (the shared
// copy lost them in export; tools/make_tokenizer_reference.py repair_llama3 does what transformers'
// TikTokenConverter does). Empty when ../shared or python3 is missing.
inline std::string llama3_dir() {
  static const std::string dir = [] {
    if (!fs::exists(kLlama3 + "/tokenizer.json")) return std::string();
    const fs::path out = kBuildDir / "data-test" / "llama3";
    if (fs::exists(out / "tokenizer.json")) return out.string();
    const std::string python = fs::exists(kPython) ? kPython : "python3";
    RunResult r = run(python + " -c \"import sys; sys.path.insert(0, '" + kRoot + "/tools'); " +
                      "from make_tokenizer_reference import repair_llama3; repair_llama3('" + kLlama3 +
                      "/tokenizer.json', '" + out.string() + "', False)\"");
    return r.code == 0 ? out.string() : std::string();
  }();
  return dir;
}

// Reads a JSONL file into a vector of objects.
inline std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace data_test
