// Text generation with a KV cache: the prompt is prefilled in one pass, then one token per step
// is decoded against the cached q/k/v rows; sampling is greedy (temperature 0) or temperature +
// top-p (nucleus), seeded. Stops at any of the given end-of-turn ids or after max_new_tokens.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "model/llama.h"

namespace sft {

struct SamplingParams {
  double temperature = 0.7;  // 0: greedy
  double top_p = 1.0;
  uint64_t seed = 42;
  int64_t max_new_tokens = 256;
};

class Generator {
 public:
  // max_len: prompt + generated tokens the cache holds.
  Generator(LlamaModel& model, int64_t max_len);
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Appends tokens to the cache and returns the logits (V) after the last one.
  std::vector<float> feed(const std::vector<int32_t>& tokens);
  int64_t length() const { return state_->len; }
  void reset() { state_->len = 0; }

  // Prefills prompt, then samples until a stop id (included in the result) or the limit;
  // on_token is called with each new id (for streaming output).
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const std::vector<int32_t>& stop_ids,
                                const SamplingParams& params,
                                const std::function<void(int32_t)>& on_token = nullptr);

 private:
  LlamaModel& model_;
  std::unique_ptr<DecodeState> state_;  // KV cache and scratch for max_len positions
};

// One token from logits (V): argmax when temperature == 0, else softmax(logits / T) restricted
// to the smallest set of tokens whose probability reaches top_p (HF TopPLogitsWarper).
int32_t sample_token(const std::vector<float>& logits, double temperature, double top_p, std::mt19937_64& rng);

}  // namespace sft
