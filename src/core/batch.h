// One batch of token rows in host memory: what the data loader produces and the model consumes.
// It lives in core/ so that data/ (which makes batches) and model/ (which runs them) both depend
// on it without depending on each other.
#pragma once
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

namespace sft {

// B rows of T tokens, flattened to N = B*T. Packed rows hold several samples; padding is a
// sequence of its own whose targets are all -100. A batch with no rows (B = 0) is valid: under
// data parallelism a rank whose share of an epoch's end is empty still joins every collective.
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;      // (N) input ids
  std::vector<int32_t> targets;     // (N) next-token target of each position, -100 = no loss
  std::vector<int32_t> positions;   // (N) RoPE position, restarting at 0 for each sequence
  std::vector<int32_t> cu_seqlens;  // (S + 1) sequence boundaries over the N tokens
  int64_t num_tokens() const { return B * T; }
  int64_t num_targets() const {     // targets != -100
    return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != -100; });
  }
};

// B rows of T uniformly random tokens below vocab, one sequence per row; targets the next token
// (-100 at each row's end), or none: the batches of sft bench and of the tests.
inline Batch random_token_batch(int64_t B, int64_t T, int32_t vocab, uint64_t seed, bool with_targets = true) {
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

}  // namespace sft
