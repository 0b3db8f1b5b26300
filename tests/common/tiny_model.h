// The tiny LLaMA configuration the io, train and dist tests build models from (2 layers, GQA,
// vocabulary 50): fast, and every unit and tensor kind present. Header only: tests/common has no
// test binary of its own.
#pragma once
#include "model/llama_config.h"

namespace sft::test_common {

inline LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  return c;
}

}  // namespace sft::test_common
