// Helpers of the ThreadWorld tests in tests/dist: random token batches and one thread per rank.
#pragma once
#include <omp.h>

#include <exception>
#include <thread>
#include <vector>

#include "core/batch.h"

namespace sft::dist_test {

// B rows of T random tokens below vocab (core/batch.h's generator with these tests' defaults).
inline Batch make_batch(int64_t B, int64_t T, uint64_t seed, bool with_targets = true, int32_t vocab = 50) {
  return random_token_batch(B, T, vocab, seed, with_targets);
}

// Runs body(rank) on one thread per rank (one OpenMP thread each); rethrows the first failure.
template <class Body>
void run_ranks(int n, Body&& body) {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      omp_set_num_threads(1);
      try {
        body(r);
      } catch (...) {
        errors[size_t(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace sft::dist_test
