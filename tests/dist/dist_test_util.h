// Helpers of the ThreadWorld tests in tests/dist: random token batches and one thread per rank.
#pragma once
#include <omp.h>

#include <exception>
#include <random>
#include <thread>
#include <vector>

#include "core/batch.h"

namespace sft::dist_test {

// B rows of T random tokens below vocab, one sequence per row; targets the next token, or none.
inline Batch make_batch(int64_t B, int64_t T, uint64_t seed, bool with_targets = true, int32_t vocab = 50) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, vocab - 1);
  Batch b;
  b.B = B;
  b.T = T;
  for (int64_t r = 0; r < B; ++r) {
    b.cu_seqlens.push_back(int32_t(r * T));
    for (int64_t t = 0; t < T; ++t) {
      b.tokens.push_back(tok(rng));
      b.positions.push_back(int32_t(t));
    }
  }
  b.cu_seqlens.push_back(int32_t(B * T));
  for (int64_t i = 0; i < B * T; ++i)
    b.targets.push_back(!with_targets || (i + 1) % T == 0 ? -100 : b.tokens[size_t(i) + 1]);
  return b;
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
