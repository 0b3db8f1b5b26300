// Logging: plain stderr lines; rank-aware once multi-process training exists (dist/).
#pragma once
#include <cstdio>
#include <fmt/format.h>
#include <string>

namespace sft {

template <typename... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  std::string s = fmt::format(f, std::forward<Args>(args)...);
  std::fprintf(stderr, "%s\n", s.c_str());
}

}  // namespace sft
