// Scratch files and the exception rule of the fuzz targets (fuzz_util.h).
#include "fuzz_util.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <typeinfo>
#include <unistd.h>

namespace sft::fuzz {

namespace fs = std::filesystem;

namespace {
struct Scratch {
  std::string path;
  Scratch() {
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp && *tmp ? tmp : "/tmp";
    std::string templ = base + "/sft-fuzz-XXXXXX";
    if (!mkdtemp(templ.data())) {
      std::perror("sft fuzz: mkdtemp");
      std::abort();
    }
    path = templ;
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
}  // namespace

const std::string& scratch_dir() {
  static Scratch s;
  return s.path;
}

std::string fresh_dir(std::string_view name) {
  const fs::path dir = fs::path(scratch_dir()) / name;
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  return dir.string();
}

void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "sft fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

std::vector<std::string_view> split_parts(std::string_view text, size_t parts) {
  static constexpr std::string_view kSep = "\n=====\n";
  std::vector<std::string_view> out;
  while (out.size() + 1 < parts) {
    const size_t at = text.find(kSep);
    if (at == std::string_view::npos) break;
    out.push_back(text.substr(0, at));
    text.remove_prefix(at + kSep.size());
  }
  out.push_back(text);
  return out;
}

std::string llama2_tokenizer_dir() { return std::string(SFT_SOURCE_DIR) + "/assets/tokenizer/llama2"; }

void fail_unexpected(const std::exception& e) {
  std::fprintf(stderr, "sft fuzz: an exception other than sft::Error escaped (%s): %s\n", typeid(e).name(), e.what());
  std::abort();
}

}  // namespace sft::fuzz
