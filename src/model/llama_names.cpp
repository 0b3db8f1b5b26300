// The HF tensor-name table of LlamaForCausalLM / Qwen2ForCausalLM: which HF tensor lives where in
// the model's fused fp32 weights. Reference: transformers convert_llama_weights_to_hf.py names
// (ecosystem.md §1.7). lm_head.weight is absent when embeddings are tied.
#include <fmt/format.h>

#include "model/param_store.h"

namespace sft {

namespace {

// Rows [row0, row0 + rows) of a (R, K) or (R) fp32 tensor, as its own contiguous view.
Tensor row_slice(const Tensor& t, int64_t row0, int64_t rows) {
  int64_t row_elems = t.ndim == 2 ? t.shape[1] : 1;
  float* base = t.f32() + row0 * row_elems;
  return t.ndim == 2 ? Tensor(base, DType::f32, {rows, t.shape[1]}, t.device) : Tensor(base, DType::f32, {rows}, t.device);
}

}  // namespace

std::vector<ParamRef> build_param_table(const LlamaConfig& cfg, const Weights& w) {
  const int64_t q_rows = cfg.num_attention_heads * cfg.head_dim;
  const int64_t kv_rows = cfg.num_key_value_heads * cfg.head_dim;
  const int64_t FF = cfg.intermediate_size;
  std::vector<ParamRef> t;
  t.push_back({"model.embed_tokens.weight", w.embed, true});
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    auto name = [&](const char* suffix) { return fmt::format("model.layers.{}.{}", l, suffix); };
    //            HF name                                  view                                       decay
    t.push_back({name("input_layernorm.weight"),          lw.attn_norm,                              false});
    t.push_back({name("self_attn.q_proj.weight"),         row_slice(lw.wqkv, 0, q_rows),             true});
    t.push_back({name("self_attn.k_proj.weight"),         row_slice(lw.wqkv, q_rows, kv_rows),       true});
    t.push_back({name("self_attn.v_proj.weight"),         row_slice(lw.wqkv, q_rows + kv_rows, kv_rows), true});
    if (!lw.bqkv.empty()) {
      t.push_back({name("self_attn.q_proj.bias"),         row_slice(lw.bqkv, 0, q_rows),             false});
      t.push_back({name("self_attn.k_proj.bias"),         row_slice(lw.bqkv, q_rows, kv_rows),       false});
      t.push_back({name("self_attn.v_proj.bias"),         row_slice(lw.bqkv, q_rows + kv_rows, kv_rows), false});
    }
    t.push_back({name("self_attn.o_proj.weight"),         lw.wo,                                     true});
    if (!lw.bo.empty())
      t.push_back({name("self_attn.o_proj.bias"),         lw.bo,                                     false});
    t.push_back({name("post_attention_layernorm.weight"), lw.mlp_norm,                               false});
    t.push_back({name("mlp.gate_proj.weight"),            row_slice(lw.wgu, 0, FF),                  true});
    t.push_back({name("mlp.up_proj.weight"),              row_slice(lw.wgu, FF, FF),                 true});
    t.push_back({name("mlp.down_proj.weight"),            lw.wdown,                                  true});
  }
  t.push_back({"model.norm.weight", w.final_norm, false});
  if (!cfg.tie_word_embeddings) t.push_back({"lm_head.weight", w.lm_head, true});
  return t;
}

}  // namespace sft
