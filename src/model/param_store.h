// ParamStore: the one place the model's parameters, gradients and optimizer state live. The model
// acquires a unit's weights just before it uses them and releases them after, and says when a
// unit's gradients are complete; the optimizer, clipping, checkpoints and HF load/save reach the
// memory only through the store's named, per-unit ranges. LocalParamStore holds everything in one
// process (today's flat buffers, at today's speed); a sharded store (FSDP full_shard / ZeRO-3)
// holds 1/N of each range and gathers a unit into a buffer on acquire.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/llama_config.h"

namespace sft {

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

struct Weights {  // views into the store's memory; the same layout serves the gradients
  Tensor embed;                      // (V, C)
  std::vector<LayerWeights> layers;  // (L)
  Tensor final_norm;                 // (C)
  Tensor lm_head;                    // (V, C); the same memory as embed when tied
};

// An HF tensor and where it lives: view has the HF shape and points into the store's full
// parameter layout (q/k/v, gate/up are row slices of the fused weights).
struct ParamRef {
  std::string hf_name;  // "model.layers.3.self_attn.k_proj.weight"
  Tensor view;          // HF shape, fp32
  bool decay;           // AdamW weight decay applies (not to norm weights and biases)
  int unit = 0;         // the ParamStore unit that holds it
  int64_t offset = 0;   // first element in the flat layout of all parameters
};

// Units, in the order a forward pass uses them (FSDP's wrapping: one per decoder layer, plus the
// embedding and the final norm + LM head). Each is one contiguous range of the flat layout; with
// tied embeddings the LM head is the embedding's memory, so the embedding unit stays acquired
// from the embedding lookup to the head.
struct ParamUnit {
  std::string name;    // "embed", "layers.3", "head"
  int64_t offset = 0;  // first element in the flat layout
  int64_t size = 0;    // elements
};

// A range of the flat layout that this process holds, with its parameters and gradients.
struct LocalSlice {
  int unit = 0;
  int64_t offset = 0;        // first element in the flat layout
  int64_t local_offset = 0;  // first element in local_params() / local_grads() / every state
  int64_t size = 0;
};

class ParamStore {
 public:
  ParamStore(const LlamaConfig& cfg, Backend& backend);
  virtual ~ParamStore();
  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;

  int num_units() const { return int(units_.size()); }
  static int unit_embed() { return 0; }
  static int unit_layer(int l) { return 1 + l; }
  int unit_head() const { return num_units() - 1; }
  const std::vector<ParamUnit>& units() const { return units_; }
  // Every HF tensor in HF order (embed, layers, norm, lm_head unless tied), with its unit.
  const std::vector<ParamRef>& param_table() const { return table_; }
  int64_t num_params() const { return num_params_; }
  Backend& backend() const { return be_; }

  // ---- the model's side: a unit's weights around their use ----
  // After acquire, weights()' views of the unit hold its full values (fp32) until release.
  virtual void acquire(int unit) = 0;
  virtual void release(int unit) = 0;
  // The views of an acquired unit were written by the owner (initialisation, loading): the store
  // keeps the new values (a sharded store keeps its own part) and drops derived weight copies.
  virtual void written(int unit) = 0;
  // Backward: grads()' views of an acquired unit are where its gradients accumulate; after
  // grads_ready every contribution of this pass is in (a sharded store reduce-scatters here).
  virtual void grads_ready(int unit) = 0;
  const Weights& weights() const { return w_; }
  const Weights& grads() const { return g_; }

  // ---- the owner's side: what this process holds ----
  // Flat fp32 parameters and gradients of every local slice, concatenated.
  virtual Tensor local_params() const = 0;
  virtual Tensor local_grads() const = 0;
  virtual const std::vector<LocalSlice>& local_slices() const = 0;
  // A zero-filled fp32 buffer shaped like local_params(), kept under a name (AdamW: "exp_avg",
  // "exp_avg_sq"); checkpoints save and restore every state by name.
  Tensor add_state(const std::string& name);
  const std::vector<std::pair<std::string, Tensor>>& states() const { return states_; }
  void zero_grad() { be_.fill_zero(local_grads()); }
  // The local parameters were updated in place (optimizer step).
  virtual void params_updated() = 0;
  // Σ g² of this process's share of the global gradient norm: its shards (the reduction over
  // ranks adds the shares up), or its 1/N part where every rank holds the same full gradient.
  virtual double grad_sum_squares() = 0;

 protected:
  Tensor alloc_f32(int64_t n);
  // table_ from w, a layout of every parameter over the flat buffer at base: each entry's flat
  // offset and unit.
  void index_table(const Weights& w, const float* base);

  const LlamaConfig cfg_;
  Backend& be_;
  std::vector<ParamUnit> units_;
  std::vector<ParamRef> table_;
  int64_t num_params_ = 0;
  Weights w_, g_;
  std::vector<std::pair<std::string, Tensor>> states_;
  std::vector<void*> owned_;  // every backend allocation, freed by the destructor
};

// Everything in one process: the full flat fp32 buffers; acquire, release and grads_ready have
// nothing to move.
class LocalParamStore : public ParamStore {
 public:
  LocalParamStore(const LlamaConfig& cfg, Backend& backend);
  void acquire(int) override {}
  void release(int) override {}
  void written(int unit) override;
  void grads_ready(int) override {}
  Tensor local_params() const override { return params_; }
  Tensor local_grads() const override { return grads_; }
  const std::vector<LocalSlice>& local_slices() const override { return slices_; }
  void params_updated() override;
  double grad_sum_squares() override;

 protected:
  Tensor params_, grads_;  // (num_params) fp32 each
  std::vector<LocalSlice> slices_;
};

// The flat layout of a config's parameters over base (HF order; the same offsets give the
// gradients), its units and its HF name table (llama_names.cpp).
int64_t lay_out_weights(const LlamaConfig& cfg, float* base, Weights& w, Device dev, std::vector<ParamUnit>* units);
std::vector<ParamRef> build_param_table(const LlamaConfig& cfg, const Weights& w);

}  // namespace sft
