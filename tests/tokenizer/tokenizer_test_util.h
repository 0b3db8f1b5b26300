// Shared helpers of the tokenizer tests: paths (repo, ../shared, the shipped LLaMA-2 tokenizer,
// the test virtualenv), running a command, and the HF reference produced at test time by
// tools/make_tokenizer_reference.py into the build directory.
#pragma once
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

namespace tok_test {

namespace fs = std::filesystem;

inline const std::string kRoot = SFT_SOURCE_DIR;
inline const std::string kSft = SFT_BINARY;
inline const std::string kShipped = kRoot + "/assets/tokenizer/llama2";
inline const std::string kShared = kRoot + "/../shared";
inline const std::string kPython = kRoot + "/.venv/bin/python";
inline const fs::path kBuildDir = fs::path(SFT_BINARY).parent_path();

inline bool have_shared() { return fs::is_directory(kShared + "/tokenizers"); }

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

// Runs the reference generator once per process. Returns the output directory, or nullopt with
// `why` set when the virtualenv is missing (the caller skips) or the generator failed (fails).
struct ReferenceState {
  std::optional<fs::path> dir;
  std::string why;
  bool failed = false;
};

inline const ReferenceState& reference() {
  static ReferenceState state;
  static std::once_flag once;
  std::call_once(once, [] {
    if (!fs::exists(kPython)) {
      state.why = "no test virtualenv (" + kPython + "): run scripts/setup_venv.sh";
      return;
    }
    const fs::path out = kBuildDir / "tokenizer-ref";
    std::string cmd = kPython + " " + kRoot + "/tools/make_tokenizer_reference.py --out " + out.string();
    if (have_shared()) cmd += " --shared " + kShared;
    RunResult r = run(cmd);
    if (r.code != 0) {
      state.failed = true;
      state.why = "tools/make_tokenizer_reference.py failed:\n" + r.out;
      return;
    }
    state.dir = out;
  });
  return state;
}

// Skips (no virtualenv) or fails (generator error) the current test when there is no reference.
#define REQUIRE_REFERENCE()                                                     \
  do {                                                                          \
    const auto& ref_state = ::tok_test::reference();                            \
    if (ref_state.failed) FAIL() << ref_state.why;                              \
    if (!ref_state.dir) GTEST_SKIP() << ref_state.why;                          \
  } while (0)

inline nlohmann::json load_reference(const std::string& name) {
  return nlohmann::json::parse(read_file(*reference().dir / (name + ".json")));
}

inline bool reference_has(const std::string& name) { return fs::exists(*reference().dir / (name + ".json")); }

// Printable form of a test text for failure messages.
inline std::string show(const std::string& s) { return nlohmann::json(s).dump(); }

}  // namespace tok_test
