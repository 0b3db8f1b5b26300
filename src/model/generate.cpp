// Generator: the model's own decoder (LlamaModel::forward_cached: the training layer code with
// attention against a per-layer cache of q|k|v rows) over new tokens, and
// sampling. HF reference: LlamaForCausalLM.generate with DynamicCache, TopPLogitsWarper.
#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace sft {

Generator::Generator(LlamaModel& model, int64_t max_len) : model_(model), state_(model.make_decode_state(max_len)) {}

std::vector<float> Generator::feed(const std::vector<int32_t>& tokens) {
  std::vector<float> logits(static_cast<size_t>(model_.config().vocab_size));
  model_.forward_cached(tokens.data(), int64_t(tokens.size()), *state_, logits.data());
  return logits;
}

int32_t sample_token(const std::vector<float>& logits, double temperature, double top_p, std::mt19937_64& rng) {
  if (temperature <= 0.0) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const float mx = *std::max_element(logits.begin(), logits.end());
  std::vector<std::pair<double, int32_t>> probs(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double p = std::exp((double(logits[i]) - mx) / temperature);
    probs[i] = {p, int32_t(i)};
    sum += p;
  }
  std::sort(probs.begin(), probs.end(), [](auto& a, auto& b) { return a.first > b.first; });
  // Keep the most likely tokens until their mass reaches top_p (at least one).
  size_t keep = 0;
  double mass = 0.0;
  while (keep < probs.size() && (keep == 0 || mass < top_p * sum)) mass += probs[keep++].first;
  std::uniform_real_distribution<double> u(0.0, mass);
  double r = u(rng);
  for (size_t i = 0; i < keep; ++i) {
    r -= probs[i].first;
    if (r <= 0.0) return probs[i].second;
  }
  return probs[keep - 1].second;
}

std::vector<int32_t> Generator::generate(const std::vector<int32_t>& prompt, const std::vector<int32_t>& stop_ids,
                                         const SamplingParams& params, const std::function<void(int32_t)>& on_token) {
  std::mt19937_64 rng(params.seed);
  std::vector<int32_t> out;
  std::vector<float> logits = feed(prompt);
  for (int64_t i = 0; i < params.max_new_tokens && state_->len < state_->max_len; ++i) {
    const int32_t t = sample_token(logits, params.temperature, params.top_p, rng);
    out.push_back(t);
    if (on_token) on_token(t);
    if (std::find(stop_ids.begin(), stop_ids.end(), t) != stop_ids.end()) break;
    if (state_->len >= state_->max_len) break;
    logits = feed({t});
  }
  return out;
}

}  // namespace sft
