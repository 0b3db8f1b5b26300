// One batch of token rows in host memory: what the data loader produces and the model consumes.
// It lives in core/ so that data/ (which makes batches) and model/ (which runs them) both depend
// on it without depending on each other.
#pragma once
#include <algorithm>
#include <cstdint>
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

}  // namespace sft
