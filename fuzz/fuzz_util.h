// Shared pieces of the libFuzzer targets (fuzz/fuzz_*.cpp): a private scratch directory per
// process for the parsers that read files, the input split into several files, and the rule
// every target enforces: bad input may only end in sft::Error (a clear "[where] ..." message);
// any other exception, a crash or a sanitizer report is a finding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.h"

namespace sft::fuzz {

// A directory of its own for this process (under $TMPDIR or /tmp), removed at exit.
const std::string& scratch_dir();
// A fresh empty subdirectory of scratch_dir() (the same path each call, emptied).
std::string fresh_dir(std::string_view name);
void write_file(const std::string& path, std::string_view bytes);
// The input as text.
inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}
// The input cut at each "\n=====\n" into at most `parts` pieces (the last keeps the rest); the
// seed files of multi-file targets are written that way.
std::vector<std::string_view> split_parts(std::string_view text, size_t parts);
// The shipped LLaMA-2 SentencePiece tokenizer directory (assets/tokenizer/llama2).
std::string llama2_tokenizer_dir();

[[noreturn]] void fail_unexpected(const std::exception& e);

// Runs f; sft::Error is the expected outcome for bad input. Any other exception aborts with its
// message, so libFuzzer records the input as a crash.
template <typename F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const sft::Error&) {
  } catch (const std::exception& e) {
    fail_unexpected(e);
  }
}
}  // namespace sft::fuzz
