// ParamStore's shared parts (layout, units, name table, named states) and LocalParamStore, the
// one-process store: one flat fp32 buffer each for parameters and gradients, laid out in HF order.
#include "model/param_store.h"

namespace sft {

int64_t lay_out_weights(const LlamaConfig& c, float* base, Weights& w, Device dev, std::vector<ParamUnit>* units) {
  const int64_t C = c.hidden_size, V = c.vocab_size, FF = c.intermediate_size;
  const int64_t QKV = c.qkv_dim(), AO = c.num_attention_heads * c.head_dim;
  int64_t off = 0;
  auto take = [&](std::initializer_list<int64_t> dims) {
    Tensor t(base ? base + off : nullptr, DType::f32, dims, dev);
    off += t.numel();
    return t;
  };
  auto unit = [&](std::string name, int64_t begin) {
    if (units) units->push_back({std::move(name), begin, off - begin});
  };
  int64_t begin = off;
  w.embed = take({V, C});
  unit("embed", begin);
  w.layers.resize(size_t(c.num_hidden_layers));
  for (size_t l = 0; l < w.layers.size(); ++l) {
    LayerWeights& lw = w.layers[l];
    begin = off;
    lw.attn_norm = take({C});
    lw.wqkv = take({QKV, C});
    lw.bqkv = c.has_qkv_bias() ? take({QKV}) : Tensor();
    lw.wo = take({C, AO});
    lw.bo = c.has_o_bias() ? take({C}) : Tensor();
    lw.mlp_norm = take({C});
    lw.wgu = take({2 * FF, C});
    lw.wdown = take({C, FF});
    unit("layers." + std::to_string(l), begin);
  }
  begin = off;
  w.final_norm = take({C});
  w.lm_head = c.tie_word_embeddings ? w.embed : take({V, C});
  unit("head", begin);
  return off;
}

ParamStore::ParamStore(const LlamaConfig& cfg, Backend& backend) : cfg_(cfg), be_(backend) {
  Weights layout;
  num_params_ = lay_out_weights(cfg_, nullptr, layout, be_.device(), &units_);
}

ParamStore::~ParamStore() {
  for (void* p : owned_) be_.dealloc(p);
}

Tensor ParamStore::alloc_f32(int64_t n) {
  void* p = be_.alloc(size_t(n) * 4);
  owned_.push_back(p);
  return Tensor(p, DType::f32, {n}, be_.device());
}

void ParamStore::index_table(const Weights& w, const float* base) {
  table_ = build_param_table(cfg_, w);
  for (ParamRef& p : table_) {
    p.offset = p.view.f32() - base;
    for (int u = 0; u < num_units(); ++u)
      if (p.offset >= units_[size_t(u)].offset && p.offset < units_[size_t(u)].offset + units_[size_t(u)].size) p.unit = u;
  }
}

Tensor ParamStore::add_state(const std::string& name) {
  for (const auto& [n, t] : states_) SFT_CHECK(n != name, "param_store", "state '{}' exists already", name);
  const Tensor t = alloc_f32(local_params().numel());
  states_.emplace_back(name, t);
  return t;
}

LocalParamStore::LocalParamStore(const LlamaConfig& cfg, Backend& backend) : ParamStore(cfg, backend) {
  params_ = alloc_f32(num_params_);
  grads_ = alloc_f32(num_params_);
  lay_out_weights(cfg_, params_.f32(), w_, be_.device(), nullptr);
  lay_out_weights(cfg_, grads_.f32(), g_, be_.device(), nullptr);
  index_table(w_, params_.f32());
  for (int u = 0; u < num_units(); ++u)
    slices_.push_back({u, units_[size_t(u)].offset, units_[size_t(u)].offset, units_[size_t(u)].size});
}

void LocalParamStore::written(int unit) {
  const ParamUnit& u = units_[size_t(unit)];
  be_.invalidate_weight_copies(params_.f32() + u.offset, size_t(u.size) * 4);
}

// The update went through Backend::adamw_step on these very buffers, which refreshes (CUDA) or
// drops (CPU) the weights' derived copies itself; invalidating here would only re-round them.
void LocalParamStore::params_updated() {}

double LocalParamStore::grad_sum_squares() { return be_.sum_squares(grads_); }

}  // namespace sft
