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

}  // namespace cli_test
