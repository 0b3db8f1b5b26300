// Error handling: user-facing validation throws sft::Error with a "[where] what" message;
// internal invariants use SFT_ASSERT, which aborts with file:line. Exceptions are caught only in main.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace sft {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// fail("safetensors", "tensor '{}' has shape {}, expected {}", name, a, b) -> "[safetensors] tensor ..."
template <typename... Args>
[[noreturn]] void fail(std::string_view where, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format("[{}] ", where) + fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace sft

#define SFT_CHECK(cond, where, ...)                \
  do {                                             \
    if (!(cond)) ::sft::fail(where, __VA_ARGS__);  \
  } while (0)

#define SFT_ASSERT(cond)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "internal error: %s:%d: assertion '%s' failed\n", __FILE__,   \
                   __LINE__, #cond);                                                      \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)
