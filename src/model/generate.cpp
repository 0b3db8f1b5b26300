// Generator: the decoder's forward over new tokens against a per-layer cache of q|k|v rows
// (the same op sequence as LlamaModel::layer_forward, with attention_forward_cached), and
// sampling. HF reference: LlamaForCausalLM.generate with DynamicCache, TopPLogitsWarper.
#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/host_access.h"

namespace sft {

Tensor Generator::alloc(std::initializer_list<int64_t> dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  void* p = model_.backend().alloc(size_t(n) * 4);
  owned_.push_back(p);
  return Tensor(p, DType::f32, dims, model_.backend().device());
}

Generator::Generator(LlamaModel& model, int64_t max_len) : model_(model), max_len_(max_len) {
  const LlamaConfig& c = model.config();
  const int64_t C = c.hidden_size, FF = c.intermediate_size, AO = c.num_attention_heads * c.head_dim;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) cache_.push_back(alloc({max_len, c.qkv_dim()}));
  x_ = alloc({max_len, C});
  xn_ = alloc({max_len, C});
  rstd_ = alloc({max_len});
  att_ = alloc({max_len, AO});
  gu_ = alloc({max_len, 2 * FF});
  h_ = alloc({max_len, FF});
  logits_ = alloc({1, c.vocab_size});
  const std::vector<float> inv_freq = rope_inv_freq(c, max_len);
  const int64_t half = int64_t(inv_freq.size());
  cos_ = alloc({max_len, half});
  sin_ = alloc({max_len, half});
  HostTensor cos(model.backend(), cos_, false), sin(model.backend(), sin_, false);
  for (int64_t p = 0; p < max_len; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(p) * inv_freq[size_t(i)];
      cos.f32()[p * half + i] = std::cos(angle);
      sin.f32()[p * half + i] = std::sin(angle);
    }
  cos.store();
  sin.store();
}

Generator::~Generator() {
  for (void* p : owned_) model_.backend().dealloc(p);
}

static Tensor rows(const Tensor& t, int64_t start, int64_t n) {
  const int64_t row = t.numel() / t.shape[0];
  return Tensor(t.f32() + start * row, DType::f32, {n, row}, t.device);
}

std::vector<float> Generator::feed(const std::vector<int32_t>& tokens) {
  const LlamaConfig& c = model_.config();
  const int64_t n = int64_t(tokens.size()), start = len_;
  SFT_CHECK(n > 0, "generate", "nothing to feed");
  SFT_CHECK(start + n <= max_len_, "generate", "sequence of {} tokens exceeds the cache of {}", start + n, max_len_);
  for (int32_t t : tokens)
    SFT_CHECK(t >= 0 && t < c.vocab_size, "generate", "token id {} outside the vocabulary ({})", t, c.vocab_size);
  Backend& be = model_.backend();
  Weights& w = model_.weights();
  const int NH = int(c.num_attention_heads), NKV = int(c.num_key_value_heads), HS = int(c.head_dim);
  const float eps = float(c.rms_norm_eps);
  std::vector<int32_t> positions(static_cast<size_t>(n));
  std::iota(positions.begin(), positions.end(), int32_t(start));
  be.begin_pass();
  const Tensor x = rows(x_, 0, n), xn = rows(xn_, 0, n), att = rows(att_, 0, n), gu = rows(gu_, 0, n), h = rows(h_, 0, n);
  be.embedding_forward(x, tokens.data(), w.embed);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[size_t(l)];
    const Tensor qkv = rows(cache_[size_t(l)], start, n);
    be.rms_norm_forward(xn, rstd_, x, lw.attn_norm, eps);
    be.linear_forward(qkv, xn, lw.wqkv, lw.bqkv, false);
    be.rope_forward(qkv, positions.data(), cos_, sin_, NH, NKV, HS);
    be.attention_forward_cached(att, cache_[size_t(l)], start, n, NH, NKV, HS);
    be.linear_forward(x, att, lw.wo, lw.bo, true);
    be.rms_norm_forward(xn, rstd_, x, lw.mlp_norm, eps);
    be.linear_forward(gu, xn, lw.wgu, Tensor(), false);
    be.swiglu_forward(h, gu);
    be.linear_forward(x, h, lw.wdown, Tensor(), true);
  }
  const Tensor last = rows(x_, n - 1, 1), last_n = rows(xn_, 0, 1);
  be.rms_norm_forward(last_n, rstd_, last, w.final_norm, eps);
  be.linear_forward(logits_, last_n, w.lm_head, Tensor(), false);
  len_ += n;
  std::vector<float> out(static_cast<size_t>(c.vocab_size));
  be.copy(out.data(), logits_.data, out.size() * 4);
  return out;
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
  for (int64_t i = 0; i < params.max_new_tokens && len_ < max_len_; ++i) {
    const int32_t t = sample_token(logits, params.temperature, params.top_p, rng);
    out.push_back(t);
    if (on_token) on_token(t);
    if (std::find(stop_ids.begin(), stop_ids.end(), t) != stop_ids.end()) break;
    if (len_ >= max_len_) break;
    logits = feed({t});
  }
  return out;
}

}  // namespace sft
