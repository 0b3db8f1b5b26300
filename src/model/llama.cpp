// LlamaModel: forward and backward of the LLaMA decoder as straight sequences of Backend ops,
// matching HF LlamaForCausalLM (modeling_llama.py): embed → L × [RMSNorm, q/k/v (+bias), RoPE,
// causal GQA attention, o_proj, residual, RMSNorm, gate/up, SwiGLU, down, residual] → RMSNorm →
// LM head → fp32 cross-entropy. backward() walks the same list in reverse; with recompute on,
// only each layer's input residual is kept and the layer is re-run just before its backward.
// Every unit's weights are acquired from the ParamStore around their use, and its gradients
// handed back with grads_ready; generation runs the same decoder_layer against a KV cache.
#include "model/llama.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "backend/host_access.h"

namespace sft {

// The training head's chunks have a multiple of this many rows (head_forward_backward).
constexpr int64_t kHeadRows = 64;
static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct LlamaModel::Acts {
  int64_t capacity = 0;          // N the buffers hold
  bool bf16 = false;             // xn1, xn2, h and dgu stored in bf16 (Backend::bf16_activations)
  std::vector<Tensor> res;       // (L+1) × (N, C) residual stream: res[l] is layer l's input
  std::vector<LayerActs> layer;  // (L) without recompute, (1) with
  Tensor proj;                   // (N, C)  o_proj output before the residual add (all layers share it)
  Tensor xf;                     // (N, C)  final norm output
  Tensor rstdf;                  // (N)
  Tensor logits;                 // (head_chunk rounded up to kHeadRows, V)
  Tensor dlogits16;              // (same) bf16: the training head's dlogits under bf16 activations
  Tensor losses;                 // (N)  per-row losses of the head, read by the host once per pass
  Tensor xf_rows;                // (N, C)  rows of xf that have a target (training head)
  Tensor dxf_rows;               // (N, C)
  // backward scratch
  Tensor dres;                   // (N, C)  gradient of the residual stream
  Tensor dxn;                    // (N, C)
  Tensor dqkv;                   // (N, QKV)
  Tensor datt;                   // (N, NH*HS)
  Tensor dgu;                    // (N, 2*FF)
  Tensor dh;                     // (N, FF)
  RopeTables rope;               // (P, HS/2) for the current batch
  int64_t rope_positions = 0, rope_seq_len = -1;
  std::vector<void*> owned;
};

int64_t LlamaModel::count_params(const LlamaConfig& c) {
  Weights w;
  return lay_out_weights(c, nullptr, w, Device::cpu, nullptr);
}

LlamaModel::LlamaModel(const LlamaConfig& cfg, Backend& backend, ModelOptions opt, std::unique_ptr<ParamStore> store)
    : cfg_(cfg), be_(backend), opt_(opt), store_(std::move(store)), acts_(std::make_unique<Acts>()) {
  if (!store_) store_ = std::make_unique<LocalParamStore>(cfg_, be_);
}

LlamaModel::~LlamaModel() {
  for (void* p : acts_->owned) be_.dealloc(p);
  for (void* p : owned_) be_.dealloc(p);
}

DecodeState::~DecodeState() {
  for (void* p : owned) backend->dealloc(p);
}


// Token ids enter the model here only (training batches and generation alike): the one range check.
static void check_tokens(const int32_t* tokens, const int32_t* targets, int64_t n, int64_t vocab, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    SFT_CHECK(tokens[i] >= 0 && tokens[i] < vocab, "model",
              "{}: token id {} at position {} is outside the vocabulary (vocab_size {})", what, tokens[i], i, vocab);
    SFT_CHECK(!targets || targets[i] == -100 || (targets[i] >= 0 && targets[i] < vocab), "model",
              "{}: target {} at position {} is outside the vocabulary (vocab_size {})", what, targets[i], i, vocab);
  }
}

void LlamaModel::ensure_capacity(const Batch& batch) {
  const int64_t N = batch.num_tokens();
  SFT_CHECK(N >= 0 && int64_t(batch.tokens.size()) == N && int64_t(batch.targets.size()) == N &&
                int64_t(batch.positions.size()) == N && (N == 0 || batch.cu_seqlens.size() >= 2) &&
                (batch.cu_seqlens.empty() ? N == 0 : batch.cu_seqlens.back() == N),
            "model", "inconsistent batch: B*T = {}, tokens {}, targets {}, positions {}, cu_seqlens end {}",
            N, batch.tokens.size(), batch.targets.size(), batch.positions.size(),
            batch.cu_seqlens.empty() ? -1 : batch.cu_seqlens.back());
  check_tokens(batch.tokens.data(), batch.targets.data(), N, cfg_.vocab_size, "batch");
  if (N == 0) return;  // a rank's empty share of an epoch's end: no ops, no buffers
  Acts& a = *acts_;
  const bool layers_match = a.layer.size() == (opt_.recompute ? 1u : size_t(cfg_.num_hidden_layers));
  const bool bf16 = be_.bf16_activations();
  if (N <= a.capacity && layers_match && bf16 == a.bf16) return;
  for (void* p : a.owned) be_.dealloc(p);
  a = Acts{};
  lay_out_acts(cfg_, opt_, N, bf16, a, [&](std::initializer_list<int64_t> dims, DType dt) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    void* p = be_.alloc(size_t(n) * dtype_size(dt));
    a.owned.push_back(p);
    return Tensor(p, dt, dims, be_.device());
  });
}

// Every activation buffer for N tokens, each obtained from alloc(dims, dtype): ensure_capacity()
// allocates through it and activation_bytes() counts through it, so the two never disagree.
// bf16: the GEMM-only operands xn1, xn2, h (forward) and dgu (backward) in bf16.
template <class Alloc>
void LlamaModel::lay_out_acts(const LlamaConfig& cfg, const ModelOptions& opt, int64_t N, bool bf16, Acts& a,
                              Alloc&& alloc) {
  const int64_t C = cfg.hidden_size, V = cfg.vocab_size, FF = cfg.intermediate_size;
  const int64_t NH = cfg.num_attention_heads, QKV = cfg.qkv_dim(), AO = NH * cfg.head_dim;
  const int64_t L = cfg.num_hidden_layers, chunk = round_up(std::min(opt.head_chunk, N), kHeadRows);
  const int64_t NP = round_up(N, kHeadRows);  // target rows, padded (head_forward_backward)
  const DType f32 = DType::f32, g16 = bf16 ? DType::bf16 : DType::f32;  // g16: GEMM-only operands
  a.capacity = N;
  a.bf16 = bf16;
  for (int64_t l = 0; l <= L; ++l) a.res.push_back(alloc({N, C}, f32));
  a.layer.resize(opt.recompute ? 1 : size_t(L));
  for (LayerActs& la : a.layer) {
    la = {alloc({N, C}, g16), alloc({N}, f32),     alloc({N, QKV}, f32), alloc({N, AO}, f32),
          alloc({N, NH}, f32), alloc({N, C}, f32), alloc({N, C}, g16),   alloc({N}, f32),
          alloc({N, 2 * FF}, f32), alloc({N, FF}, g16)};
  }
  a.proj = alloc({N, C}, f32);
  a.xf = alloc({N, C}, f32);
  a.rstdf = alloc({N}, f32);
  a.logits = alloc({chunk, V}, f32);
  if (bf16) a.dlogits16 = alloc({chunk, V}, DType::bf16);
  a.losses = alloc({NP}, f32);
  a.xf_rows = alloc({NP, C}, f32);
  a.dxf_rows = alloc({NP, C}, f32);
  a.dres = alloc({N, C}, f32);
  a.dxn = alloc({N, C}, f32);
  a.dqkv = alloc({N, QKV}, f32);
  a.datt = alloc({N, AO}, f32);
  a.dgu = alloc({N, 2 * FF}, g16);
  a.dh = alloc({N, FF}, f32);
}

// The larger of the fp32 layout and the bf16-activation one (the backend decides which it gets;
// today the fp32 one is never smaller).
int64_t LlamaModel::activation_bytes(const LlamaConfig& cfg, const ModelOptions& opt, int64_t N) {
  int64_t most = 0;
  for (bool bf16 : {false, true}) {
    Acts a;
    int64_t bytes = 0;
    lay_out_acts(cfg, opt, N, bf16, a, [&](std::initializer_list<int64_t> dims, DType dt) {
      int64_t n = 1;
      for (int64_t d : dims) n *= d;
      bytes += n * int64_t(dtype_size(dt));
      return Tensor();
    });
    most = std::max(most, bytes);
  }
  return most;
}

// cos/sin (P, HS/2) of position × inv_freq in fp32, as HF LlamaRotaryEmbedding; seq_len only
// matters for dynamic NTK scaling. The one fill of the tables, for training and generation.
void LlamaModel::fill_rope(RopeTables& rope, int64_t P, int64_t seq_len) {
  const std::vector<float> inv_freq = rope_inv_freq(cfg_, seq_len);
  const int64_t half = int64_t(inv_freq.size());
  SFT_ASSERT(rope.cos.numel() >= P * half && rope.sin.numel() >= P * half);
  HostTensor cos(be_, rope.cos, false), sin(be_, rope.sin, false);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(p) * inv_freq[size_t(i)];
      cos.f32()[p * half + i] = std::cos(angle);
      sin.f32()[p * half + i] = std::sin(angle);
    }
  cos.store();
  sin.store();
}

void LlamaModel::prepare_rope(const Batch& batch) {
  Acts& a = *acts_;
  const int64_t P = *std::max_element(batch.positions.begin(), batch.positions.end()) + 1;
  int64_t max_len = 0;
  for (size_t s = 0; s + 1 < batch.cu_seqlens.size(); ++s)
    max_len = std::max<int64_t>(max_len, batch.cu_seqlens[s + 1] - batch.cu_seqlens[s]);
  // Dynamic NTK scaling depends on the sequence length; the others do not.
  const int64_t seq_len = cfg_.rope_scaling == RopeScaling::dynamic ? max_len : 0;
  if (P <= a.rope_positions && seq_len == a.rope_seq_len) return;
  const int64_t half = cfg_.head_dim / 2;
  if (P > a.rope_positions) {
    for (Tensor* t : {&a.rope.cos, &a.rope.sin}) {
      void* p = be_.alloc(size_t(P * half) * 4);
      owned_.push_back(p);
      *t = Tensor(p, DType::f32, {P, half}, be_.device());
    }
  }
  fill_rope(a.rope, P, seq_len);
  a.rope_positions = std::max(P, a.rope_positions);
  a.rope_seq_len = seq_len;
}

static Tensor rows(const Tensor& t, int64_t n) {  // the first n rows of an (N, ...) buffer
  Tensor r = t;
  r.shape[0] = n;
  return r;
}

static Tensor rows(const Tensor& t, int64_t start, int64_t n) {  // rows [start, start + n) of a 2-D buffer
  return Tensor(t.f32() + start * t.dim(1), DType::f32, {n, t.dim(1)}, t.device);
}

// Σ of the first n per-row losses (in row order, in double), read through the host once.
static double sum_losses(Backend& be, const Tensor& losses, int64_t n) {
  const HostTensor l(be, rows(losses, n), true);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += l.f32()[i];
  return sum;
}

// Runs of consecutive values in idx as {first value, position in idx, length}: rows are gathered
// and scattered one run (one copy) at a time.
static std::vector<std::array<int64_t, 3>> index_runs(const std::vector<int64_t>& idx) {
  std::vector<std::array<int64_t, 3>> runs;
  for (size_t r = 0; r < idx.size(); ++r)
    if (!runs.empty() && runs.back()[0] + runs.back()[2] == idx[r])
      ++runs.back()[2];
    else
      runs.push_back({idx[r], int64_t(r), 1});
  return runs;
}

void LlamaModel::decoder_layer(int l, Tensor x, Tensor out, const LayerActs& a, Tensor qkv, Tensor proj,
                               const int32_t* positions, const RopeTables& rope, const Attend& attend) {
  const LayerWeights& w = store_->weights().layers[size_t(l)];
  const int64_t n = x.dim(0);
  const int NH = int(cfg_.num_attention_heads), NKV = int(cfg_.num_key_value_heads), HS = int(cfg_.head_dim);
  const float eps = float(cfg_.rms_norm_eps);
  const Tensor xn1 = rows(a.xn1, n), att = rows(a.att, n), res_mid = rows(a.res_mid, n);
  const Tensor xn2 = rows(a.xn2, n), gu = rows(a.gu, n), h = rows(a.h, n);
  // attention block
  be_.rms_norm_forward(xn1, a.rstd1, x, w.attn_norm, eps);
  be_.linear_forward(qkv, xn1, w.wqkv, w.bqkv, false);
  be_.rope_forward(qkv, positions, rope.cos, rope.sin, NH, NKV, HS);
  if (attend.seqs) be_.attention_forward(att, a.lse, qkv, *attend.seqs, NH, NKV, HS);
  else be_.attention_forward_cached(att, attend.cache, attend.start, n, NH, NKV, HS);
  be_.linear_forward(proj, att, w.wo, w.bo, false);  // proj = o_proj(att)
  // MLP block; res_mid = x + proj and its norm in one pass
  be_.residual_rms_norm_forward(res_mid, xn2, a.rstd2, x, proj, w.mlp_norm, eps);
  be_.linear_forward(gu, xn2, w.wgu, Tensor(), false);
  be_.swiglu_forward(h, gu);
  be_.copy(out.data, res_mid.data, res_mid.nbytes());
  be_.linear_forward(out, h, w.wdown, Tensor(), true);  // out = res_mid + down_proj(h)
}

void LlamaModel::layer_forward(int l, const Batch& batch, const SeqLayout& seqs, bool save) {
  const LayerActs& a = acts_->layer[save && !opt_.recompute ? size_t(l) : 0];
  const int64_t N = batch.num_tokens();
  decoder_layer(l, rows(acts_->res[size_t(l)], N), rows(acts_->res[size_t(l) + 1], N), a, rows(a.qkv, N),
                rows(acts_->proj, N), batch.positions.data(), acts_->rope, Attend{&seqs, Tensor(), 0});
}

// Expects acts_->dres = dL/d res[l+1]; leaves dL/d res[l] there. Parameter grads accumulate.
void LlamaModel::layer_backward(int l, const Batch& batch, const SeqLayout& seqs) {
  if (opt_.recompute) layer_forward(l, batch, seqs, true);
  const LayerWeights& w = store_->weights().layers[size_t(l)];
  const LayerWeights& g = store_->grads().layers[size_t(l)];
  LayerActs& a = acts_->layer[opt_.recompute ? 0 : size_t(l)];
  Acts& s = *acts_;
  const int64_t N = batch.num_tokens();
  const int NH = int(cfg_.num_attention_heads), NKV = int(cfg_.num_key_value_heads), HS = int(cfg_.head_dim);
  const Tensor x = rows(s.res[size_t(l)], N), dres = rows(s.dres, N), dxn = rows(s.dxn, N);
  const Tensor dh = rows(s.dh, N), dgu = rows(s.dgu, N), datt = rows(s.datt, N), dqkv = rows(s.dqkv, N);
  // MLP block, reversed
  be_.linear_backward(dh, g.wdown, Tensor(), dres, rows(a.h, N), w.wdown, false);
  be_.swiglu_backward(dgu, dh, rows(a.gu, N));
  be_.linear_backward(dxn, g.wgu, Tensor(), dgu, rows(a.xn2, N), w.wgu, false);
  be_.rms_norm_backward(dres, g.mlp_norm, dxn, rows(a.res_mid, N), w.mlp_norm, a.rstd2);  // dres +=
  // attention block, reversed
  be_.linear_backward(datt, g.wo, g.bo, dres, rows(a.att, N), w.wo, false);
  be_.attention_backward(dqkv, datt, rows(a.qkv, N), rows(a.att, N), a.lse, seqs, NH, NKV, HS);
  be_.rope_backward(dqkv, batch.positions.data(), s.rope.cos, s.rope.sin, NH, NKV, HS);
  be_.linear_backward(dxn, g.wqkv, g.bqkv, dqkv, rows(a.xn1, N), w.wqkv, false);
  be_.rms_norm_backward(dres, g.attn_norm, dxn, x, w.attn_norm, a.rstd1);  // dres +=
}

// Inference head: logits for every token in chunks, optional copy-out, loss sum over targets.
double LlamaModel::head_forward(const Batch& batch, float* logits_out) {
  Acts& a = *acts_;
  const int64_t N = batch.num_tokens(), V = cfg_.vocab_size;
  const int64_t chunk = a.logits.dim(0);
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t n = std::min(chunk, N - n0);
    const Tensor x = rows(a.xf, n0, n), logits = rows(a.logits, n);
    be_.linear_forward(logits, x, store_->weights().lm_head, Tensor(), false);
    if (logits_out) be_.copy(logits_out + n0 * V, logits.data, logits.nbytes());
    be_.cross_entropy_forward(Tensor(a.losses.f32() + n0, DType::f32, {n}, a.losses.device), logits,
                              batch.targets.data() + n0);
  }
  return sum_losses(be_, a.losses, N);
}

// Training head: only rows with a target need logits (prompt and padding rows have zero loss
// gradient), so they are gathered first; LM head, cross-entropy and its backward run per chunk
// and the full (N, V) logits never exist. Writes dL/d xf into acts_->dxn.
double LlamaModel::head_forward_backward(const Batch& batch, float loss_scale) {
  Acts& a = *acts_;
  const int64_t N = batch.num_tokens(), C = cfg_.hidden_size;
  const int64_t chunk = a.logits.dim(0);
  std::vector<int64_t> idx;
  std::vector<int32_t> tgt;
  for (int64_t i = 0; i < N; ++i)
    if (batch.targets[size_t(i)] != -100) {
      idx.push_back(i);
      tgt.push_back(batch.targets[size_t(i)]);
    }
  const int64_t M = int64_t(idx.size());
  const auto runs = index_runs(idx);
  for (const auto& [first, pos, len] : runs)
    be_.copy(a.xf_rows.f32() + pos * C, a.xf.f32() + first * C, size_t(len * C) * 4);
  // Every chunk has a multiple of kHeadRows rows: the target count changes from batch to batch,
  // and each new row count made oneDNN build (JIT) new GEMM kernels for the LM head, ~50 ms each
  // on a 2-core Xeon. The padding rows have x = 0 and no target, so no loss and no gradient.
  const int64_t MP = round_up(M, kHeadRows);
  if (MP > M) be_.fill_zero(rows(a.xf_rows, M, MP - M));
  tgt.resize(size_t(MP), -100);
  for (int64_t r0 = 0; r0 < M; r0 += chunk) {
    const int64_t n = std::min(chunk, MP - r0);
    const Tensor x = rows(a.xf_rows, r0, n), dx = rows(a.dxf_rows, r0, n), logits = rows(a.logits, n);
    be_.linear_forward(logits, x, store_->weights().lm_head, Tensor(), false);
    const Tensor losses(a.losses.f32() + r0, DType::f32, {n}, a.losses.device);
    if (a.bf16) {  // dlogits rounded to bf16 by the cross-entropy: the GEMMs below read half the bytes
      const Tensor dlogits = rows(a.dlogits16, n);
      be_.cross_entropy_forward_backward_bf16(losses, logits, tgt.data() + r0, loss_scale, dlogits);
      be_.linear_backward(dx, store_->grads().lm_head, Tensor(), dlogits, x, store_->weights().lm_head, false);
    } else {
      be_.cross_entropy_forward_backward(losses, logits, tgt.data() + r0, loss_scale);
      be_.linear_backward(dx, store_->grads().lm_head, Tensor(), logits, x, store_->weights().lm_head, false);  // logits now hold dlogits
    }
  }
  Tensor dxf = rows(a.dxn, N);
  be_.fill_zero(dxf);
  for (const auto& [first, pos, len] : runs)
    be_.copy(dxf.f32() + first * C, a.dxf_rows.f32() + pos * C, size_t(len * C) * 4);
  return sum_losses(be_, a.losses, M);
}

// The packed sequences of a batch; none may be longer than a sliding window (llama_config.h).
static SeqLayout seq_layout(const Batch& batch, int64_t sliding_window) {
  SeqLayout s{batch.cu_seqlens.data(), int(batch.cu_seqlens.size()) - 1, 0};
  for (int i = 0; i < s.num_seqs; ++i)
    s.max_seqlen = std::max(s.max_seqlen, batch.cu_seqlens[size_t(i) + 1] - batch.cu_seqlens[size_t(i)]);
  SFT_CHECK(sliding_window == 0 || s.max_seqlen <= sliding_window, "model",
            "a sequence of {} tokens is longer than the model's sliding_window {} (config.json): sliding-window "
            "attention is not implemented, sequences of up to {} tokens are exact",
            s.max_seqlen, sliding_window, sliding_window);
  return s;
}

// Units in the order of use: the embedding, each decoder layer, the head (final norm + LM head).
// With tied embeddings the LM head is the embedding's memory, so that unit stays acquired until
// the head is done (and, in training, until the embedding's own backward).
// forward_to_head: the walk both passes share — the embedding, every decoder layer (activations
// kept for backward when save), the final norm; returns with the head unit acquired (and, tied,
// the embedding's).
SeqLayout LlamaModel::forward_to_head(const Batch& batch, bool save) {
  ParamStore& ps = *store_;
  const int64_t N = batch.num_tokens();
  const SeqLayout seqs = N ? seq_layout(batch, cfg_.sliding_window) : SeqLayout{};
  be_.begin_pass();
  ensure_capacity(batch);
  if (N) prepare_rope(batch);
  Acts& a = *acts_;
  ps.acquire(ps.unit_embed());
  if (N) be_.embedding_forward(rows(a.res[0], N), batch.tokens.data(), ps.weights().embed);
  if (!cfg_.tie_word_embeddings) ps.release(ps.unit_embed());
  for (int l = 0; l < int(cfg_.num_hidden_layers); ++l) {
    ps.acquire(ps.unit_layer(l));
    if (N) layer_forward(l, batch, seqs, save);
    ps.release(ps.unit_layer(l));
  }
  ps.acquire(ps.unit_head());
  if (N)
    be_.rms_norm_forward(rows(a.xf, N), a.rstdf, rows(a.res.back(), N), ps.weights().final_norm,
                         float(cfg_.rms_norm_eps));
  return seqs;
}

double LlamaModel::forward(const Batch& batch, float* logits) {
  ParamStore& ps = *store_;
  forward_to_head(batch, false);
  const double loss = batch.num_tokens() ? head_forward(batch, logits) : 0.0;
  ps.release(ps.unit_head());
  if (cfg_.tie_word_embeddings) ps.release(ps.unit_embed());
  return loss;
}

double LlamaModel::forward_backward(const Batch& batch, float loss_scale) {
  ParamStore& ps = *store_;
  const int64_t N = batch.num_tokens();
  const SeqLayout seqs = forward_to_head(batch, true);
  Acts& a = *acts_;
  double loss = 0.0;
  if (N) {
    loss = head_forward_backward(batch, loss_scale);
    // backward
    Tensor dres = rows(a.dres, N);
    be_.fill_zero(dres);
    be_.rms_norm_backward(dres, ps.grads().final_norm, rows(a.dxn, N), rows(a.res.back(), N),
                          ps.weights().final_norm, a.rstdf);
  }
  ps.grads_ready(ps.unit_head());
  ps.release(ps.unit_head());
  for (int l = int(cfg_.num_hidden_layers) - 1; l >= 0; --l) {
    ps.acquire(ps.unit_layer(l));
    if (N) layer_backward(l, batch, seqs);
    ps.grads_ready(ps.unit_layer(l));
    ps.release(ps.unit_layer(l));
  }
  if (!cfg_.tie_word_embeddings) ps.acquire(ps.unit_embed());
  if (N) be_.embedding_backward(ps.grads().embed, rows(a.dres, N), batch.tokens.data());
  ps.grads_ready(ps.unit_embed());
  ps.release(ps.unit_embed());
  return loss;
}

std::unique_ptr<DecodeState> LlamaModel::make_decode_state(int64_t max_len) {
  auto st = std::make_unique<DecodeState>();
  st->backend = &be_;
  st->max_len = max_len;
  auto alloc = [&](std::initializer_list<int64_t> dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    void* p = be_.alloc(size_t(n) * 4);
    st->owned.push_back(p);
    return Tensor(p, DType::f32, dims, be_.device());
  };
  const int64_t C = cfg_.hidden_size, FF = cfg_.intermediate_size, NH = cfg_.num_attention_heads;
  const int64_t AO = NH * cfg_.head_dim;
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) st->cache.push_back(alloc({max_len, cfg_.qkv_dim()}));
  LayerActs& a = st->acts;  // qkv lives in the cache; lse is not needed without a backward
  a = {alloc({max_len, C}), alloc({max_len}), Tensor(), alloc({max_len, AO}), Tensor(), alloc({max_len, C}),
       alloc({max_len, C}), alloc({max_len}), alloc({max_len, 2 * FF}), alloc({max_len, FF})};
  st->x = alloc({max_len, C});
  st->proj = alloc({max_len, C});
  st->xf = alloc({1, C});
  st->rstdf = alloc({1});
  st->logits = alloc({1, cfg_.vocab_size});
  st->rope = {alloc({max_len, cfg_.head_dim / 2}), alloc({max_len, cfg_.head_dim / 2})};
  fill_rope(st->rope, max_len, max_len);
  return st;
}

void LlamaModel::forward_cached(const int32_t* tokens, int64_t n, DecodeState& st, float* logits) {
  ParamStore& ps = *store_;
  const bool tied = cfg_.tie_word_embeddings;
  const int64_t start = st.len;
  SFT_CHECK(n > 0, "generate", "nothing to feed");
  SFT_CHECK(start + n <= st.max_len, "generate", "sequence of {} tokens exceeds the cache of {}", start + n,
            st.max_len);
  check_tokens(tokens, nullptr, n, cfg_.vocab_size, "generate");
  std::vector<int32_t> positions(static_cast<size_t>(n));
  std::iota(positions.begin(), positions.end(), int32_t(start));
  be_.begin_pass();
  const Tensor x = rows(st.x, n);
  ps.acquire(ps.unit_embed());
  be_.embedding_forward(x, tokens, ps.weights().embed);
  if (!tied) ps.release(ps.unit_embed());
  for (int l = 0; l < int(cfg_.num_hidden_layers); ++l) {
    ps.acquire(ps.unit_layer(l));
    const Tensor cache = st.cache[size_t(l)];
    decoder_layer(l, x, x, st.acts, rows(cache, start, n), rows(st.proj, n), positions.data(), st.rope,
                  Attend{nullptr, cache, start});
    ps.release(ps.unit_layer(l));
  }
  ps.acquire(ps.unit_head());
  be_.rms_norm_forward(st.xf, st.rstdf, rows(st.x, n - 1, 1), ps.weights().final_norm, float(cfg_.rms_norm_eps));
  be_.linear_forward(st.logits, st.xf, ps.weights().lm_head, Tensor(), false);
  ps.release(ps.unit_head());
  if (tied) ps.release(ps.unit_embed());
  st.len += n;
  be_.copy(logits, st.logits.data, size_t(cfg_.vocab_size) * 4);
}

}  // namespace sft
