// The LLaMA-family decoder (HF LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM) for
// training and generation: weights and gradients in a ParamStore (acquired unit by unit),
// activations sized for the largest batch seen, forward() and backward() as straight sequences of
// Backend op calls; generation runs the same decoder layer against a KV cache.
// q/k/v and gate/up are stored fused ((NH+2NKV)*HS and 2*FF rows) so each is one GEMM; the HF
// name table (llama_names.cpp) maps HF tensors onto row slices of the fused weights.
//
// Dimension letters (see backend/backend.h): B, T, N = B*T, C, V, L, NH, NKV, HS, FF, QKV, S.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/batch.h"
#include "model/llama_config.h"
#include "model/param_store.h"

namespace sft {

struct ModelOptions {
  bool recompute = false;  // per-decoder-layer activation recompute (gradient checkpointing)
  int64_t head_chunk = 1024;  // tokens per LM-head + cross-entropy chunk in training
};

// Activations of one decoder layer (kept per layer, or one set reused when recomputing or
// generating).
struct LayerActs {
  Tensor xn1;      // (N, C)       input_layernorm output (bf16 in training under bf16_activations)
  Tensor rstd1;    // (N)
  Tensor qkv;      // (N, QKV)     q | k | v after RoPE
  Tensor att;      // (N, NH*HS)   attention output
  Tensor lse;      // (N, NH)      attention logsumexp
  Tensor res_mid;  // (N, C)       residual after attention
  Tensor xn2;      // (N, C)       post_attention_layernorm output (as xn1)
  Tensor rstd2;    // (N)
  Tensor gu;       // (N, 2*FF)    gate | up
  Tensor h;        // (N, FF)      silu(gate) * up (as xn1)
};

struct RopeTables {
  Tensor cos, sin;  // (P, HS/2) cos/sin of position × inv_freq, fp32
};

// Generation state: per-layer caches of q|k|v rows and one layer's scratch, for up to max_len
// positions (model.make_decode_state).
struct DecodeState {
  int64_t max_len = 0, len = 0;  // capacity and positions filled so far
  std::vector<Tensor> cache;     // (L) × (max_len, QKV) q | k | v of every position so far
  LayerActs acts;                // (max_len rows) one layer's activations
  Tensor x, proj;                // (max_len, C) residual stream, o_proj output
  Tensor xf, rstdf;              // (1, C), (1) final norm of the last token
  Tensor logits;                 // (1, V)
  RopeTables rope;               // (max_len, HS/2)
  Backend* backend = nullptr;    // owner of every buffer above
  std::vector<void*> owned;
  DecodeState() = default;
  DecodeState(const DecodeState&) = delete;
  DecodeState& operator=(const DecodeState&) = delete;
  ~DecodeState();
};

class LlamaModel {
 public:
  // The model over a store the caller provides (e.g. a sharded one), or over its own
  // LocalParamStore when store is null.
  LlamaModel(const LlamaConfig& cfg, Backend& backend, ModelOptions opt = {}, std::unique_ptr<ParamStore> store = nullptr);
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  // Forward only. Returns Σ cross-entropy over targets != -100 (fp32 math, double sum). When
  // logits is non-null it receives all (N, V) logits (host memory). A batch without rows runs
  // no ops but acquires and releases every unit like any other (data-parallel ranks stay in step).
  double forward(const Batch& batch, float* logits = nullptr);
  // Forward + backward: gradients += d(loss_sum * loss_scale)/dθ. loss_scale is 1 / (valid
  // targets in the optimizer step) for the global token mean. Returns the unscaled loss sum.
  double forward_backward(const Batch& batch, float loss_scale);
  // Generation: appends n tokens at positions [st.len, st.len + n) through every decoder layer
  // (the same layer code as training, attention against the cache) and writes the last token's
  // logits (V) to logits (host memory).
  void forward_cached(const int32_t* tokens, int64_t n, DecodeState& st, float* logits);
  std::unique_ptr<DecodeState> make_decode_state(int64_t max_len);
  void zero_grad() { store_->zero_grad(); }

  const LlamaConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }
  ParamStore& store() { return *store_; }
  void set_recompute(bool on) { opt_.recompute = on; }
  // Views of every parameter / gradient (one process: the whole model; tests and tools).
  const Weights& weights() const { return store_->weights(); }
  const Weights& grads() const { return store_->grads(); }
  Tensor params_flat() const { return store_->local_params(); }  // (num_params) fp32 in one process
  Tensor grads_flat() const { return store_->local_grads(); }
  int64_t num_params() const { return store_->num_params(); }
  // Every HF tensor in HF order (embed, layers, norm, lm_head unless tied).
  const std::vector<ParamRef>& param_table() const { return store_->param_table(); }
  // The same table over the gradient memory (same names and shapes).
  std::vector<ParamRef> grad_table() const { return build_param_table(cfg_, store_->grads()); }
  // Parameter count of a config, and the bytes of activation buffers forward_backward() allocates
  // for a batch of N tokens (the memory check before training uses both).
  static int64_t count_params(const LlamaConfig& cfg);
  static int64_t activation_bytes(const LlamaConfig& cfg, const ModelOptions& opt, int64_t N);

 private:
  struct Acts;
  // Where one decoder layer's attention reads keys and values: the packed sequences of a batch
  // (training), or a KV cache whose rows [start, start + n) are the new tokens (generation).
  struct Attend {
    const SeqLayout* seqs = nullptr;
    Tensor cache;
    int64_t start = 0;
  };
  void ensure_capacity(const Batch& batch);
  template <class Alloc>
  static void lay_out_acts(const LlamaConfig& cfg, const ModelOptions& opt, int64_t N, bool bf16, Acts& a,
                           Alloc&& alloc);
  void prepare_rope(const Batch& batch);
  SeqLayout forward_to_head(const Batch& batch, bool save);
  void fill_rope(RopeTables& rope, int64_t P, int64_t seq_len);
  // out (n, C) = decoder layer l of x (n, C); the op sequence of training and generation. out may
  // be x. qkv receives q|k|v rows (a.qkv, or the cache rows of the new tokens).
  void decoder_layer(int l, Tensor x, Tensor out, const LayerActs& a, Tensor qkv, Tensor proj,
                     const int32_t* positions, const RopeTables& rope, const Attend& attend);
  void layer_forward(int l, const Batch& batch, const SeqLayout& seqs, bool save);
  void layer_backward(int l, const Batch& batch, const SeqLayout& seqs);
  double head_forward(const Batch& batch, float* logits);
  double head_forward_backward(const Batch& batch, float loss_scale);

  LlamaConfig cfg_;
  Backend& be_;
  ModelOptions opt_;
  std::unique_ptr<ParamStore> store_;
  std::unique_ptr<Acts> acts_;
  std::vector<void*> owned_;  // RoPE tables, freed in the destructor
};

}  // namespace sft
