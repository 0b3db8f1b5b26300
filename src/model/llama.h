// The LLaMA-family decoder (HF LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM) for
// training: fp32 master weights and gradients in one flat buffer each, activations sized for the
// largest batch seen, forward() and backward() as straight sequences of Backend op calls.
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
#include "model/llama_config.h"

namespace sft {

// One batch in host memory: B rows of T tokens, flattened to N = B*T. Packed rows hold several
// samples; padding is a sequence of its own whose targets are all -100.
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;      // (N) input ids
  std::vector<int32_t> targets;     // (N) next-token target of each position, -100 = no loss
  std::vector<int32_t> positions;   // (N) RoPE position, restarting at 0 for each sequence
  std::vector<int32_t> cu_seqlens;  // (S + 1) sequence boundaries over the N tokens
  int64_t num_tokens() const { return B * T; }
  int64_t num_targets() const;      // targets != -100
};

struct LayerWeights {
  Tensor attn_norm;  // (C)            input_layernorm
  Tensor wqkv;       // (QKV, C)       q_proj | k_proj | v_proj
  Tensor bqkv;       // (QKV)          their biases (Qwen2, attention_bias), else empty
  Tensor wo;         // (C, NH*HS)     o_proj
  Tensor bo;         // (C)            o_proj bias (attention_bias), else empty
  Tensor mlp_norm;   // (C)            post_attention_layernorm
  Tensor wgu;        // (2*FF, C)      gate_proj | up_proj
  Tensor wdown;      // (C, FF)        down_proj
};

struct Weights {  // views into one flat fp32 buffer; the same layout serves the gradients
  Tensor embed;                      // (V, C)
  std::vector<LayerWeights> layers;  // (L)
  Tensor final_norm;                 // (C)
  Tensor lm_head;                    // (V, C); the same memory as embed when tied
};

// An HF tensor and where it lives in the model: view has the HF shape and points into the flat
// fp32 parameter buffer (q/k/v, gate/up are row slices of the fused weights).
struct ParamRef {
  std::string hf_name;  // "model.layers.3.self_attn.k_proj.weight"
  Tensor view;          // HF shape, fp32
  bool decay;           // AdamW weight decay applies (not to norm weights and biases)
};

struct ModelOptions {
  bool recompute = false;  // per-decoder-layer activation recompute (gradient checkpointing)
  int64_t head_chunk = 1024;  // tokens per LM-head + cross-entropy chunk in training
};

class LlamaModel {
 public:
  LlamaModel(const LlamaConfig& cfg, Backend& backend, ModelOptions opt = {});
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  // Forward only. Returns Σ cross-entropy over targets != -100 (fp32 math, double sum). When
  // logits is non-null it receives all (N, V) logits (host memory).
  double forward(const Batch& batch, float* logits = nullptr);
  // Forward + backward: gradients += d(loss_sum * loss_scale)/dθ. loss_scale is 1 / (valid
  // targets in the optimizer step) for the global token mean. Returns the unscaled loss sum.
  double forward_backward(const Batch& batch, float loss_scale);
  void zero_grad();

  const LlamaConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }
  const ModelOptions& options() const { return opt_; }
  void set_recompute(bool on) { opt_.recompute = on; }
  Weights& weights() { return w_; }
  Weights& grads() { return g_; }
  Tensor params_flat() const { return params_; }  // (num_params) fp32
  Tensor grads_flat() const { return grads_; }     // (num_params) fp32
  int64_t num_params() const { return params_.numel(); }
  // Every HF tensor in HF order (embed, layers, norm, lm_head unless tied).
  const std::vector<ParamRef>& param_table() const { return table_; }
  // The same table over the gradient buffer (same names and shapes).
  std::vector<ParamRef> grad_table() const;
  // Matmul weight count (excludes norms, biases and the embedding lookup) for FLOP counts (§9).
  int64_t num_matmul_params() const;
  // Parameter count of a config, and the bytes of activation buffers forward_backward() allocates
  // for a batch of N tokens (the memory check before training uses both).
  static int64_t count_params(const LlamaConfig& cfg);
  static int64_t activation_bytes(const LlamaConfig& cfg, const ModelOptions& opt, int64_t N);

 private:
  struct Acts;
  void ensure_capacity(const Batch& batch);
  template <class Alloc>
  static void lay_out_acts(const LlamaConfig& cfg, const ModelOptions& opt, int64_t N, Acts& a, Alloc&& alloc);
  void prepare_rope(const Batch& batch);
  void layer_forward(int l, const Batch& batch, const SeqLayout& seqs, bool save);
  void layer_backward(int l, const Batch& batch, const SeqLayout& seqs);
  double head_forward(const Batch& batch, float* logits);
  double head_forward_backward(const Batch& batch, float loss_scale);
  Tensor alloc_f32(std::initializer_list<int64_t> dims);

  LlamaConfig cfg_;
  Backend& be_;
  ModelOptions opt_;
  Tensor params_, grads_;
  Weights w_, g_;
  std::vector<ParamRef> table_;
  std::unique_ptr<Acts> acts_;
  std::vector<void*> owned_;  // every backend allocation, freed in the destructor
};

// Build the HF name table over a Weights layout (llama_names.cpp).
std::vector<ParamRef> build_param_table(const LlamaConfig& cfg, const Weights& w);

}  // namespace sft
