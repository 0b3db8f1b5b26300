// Text generation with a KV cache: the prompt is prefilled in one pass, then one token per step
// is decoded against the cached q/k/v rows; sampling is greedy (temperature 0) or temperature +
// top-p (nucleus), seeded. Stops at any of the given end-of-turn ids or after max_new_tokens.
#pragma once
#include <cstdint>
#include <functional>
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
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Appends tokens to the cache and returns the logits (V) after the last one.
  std::vector<float> feed(const std::vector<int32_t>& tokens);
  int64_t length() const { return len_; }
  void reset() { len_ = 0; }

  // Prefills prompt, then samples until a stop id (included in the result) or the limit;
  // on_token is called with each new id (for streaming output).
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const std::vector<int32_t>& stop_ids,
                                const SamplingParams& params,
                                const std::function<void(int32_t)>& on_token = nullptr);

 private:
  Tensor alloc(std::initializer_list<int64_t> dims);
  LlamaModel& model_;
  int64_t max_len_, len_ = 0;
  std::vector<Tensor> cache_;  // (L) × (max_len, QKV)
  Tensor x_, xn_, att_, gu_, h_, logits_, rstd_;  // scratch sized for max_len rows
  Tensor cos_, sin_;                              // (max_len, HS/2)
  std::vector<void*> owned_;
};

// One token from logits (V): argmax when temperature == 0, else softmax(logits / T) restricted
// to the smallest set of tokens whose probability reaches top_p (HF TopPLogitsWarper).
int32_t sample_token(const std::vector<float>& logits, double temperature, double top_p, std::mt19937_64& rng);

}  // namespace sft
