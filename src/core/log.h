// Logging: plain stderr lines, prefixed with the process's rank in a multi-process job (set once
// at start by the launcher-aware command; errors from every rank then say which rank they are).
#pragma once
#include <cstdio>
#include <fmt/format.h>
#include <string>

namespace sft {

namespace detail {
inline std::string& rank_prefix_storage() {
  static std::string prefix;
  return prefix;
}
}  // namespace detail

// "[rank 3/8] " in a job of several ranks, "" otherwise.
inline void set_process_rank(int rank, int size) {
  detail::rank_prefix_storage() = size > 1 ? fmt::format("[rank {}/{}] ", rank, size) : std::string();
}
inline const std::string& rank_prefix() { return detail::rank_prefix_storage(); }

template <typename... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  std::string s = fmt::format(f, std::forward<Args>(args)...);
  std::fflush(stdout);  // stdout is buffered when piped: what was printed before stays above this line
  std::fprintf(stderr, "%s%s\n", rank_prefix().c_str(), s.c_str());
}

}  // namespace sft
