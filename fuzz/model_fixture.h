// The tiny LLaMA model the weight and checkpoint targets load into (the tests' tiny config:
// 2 layers, GQA, vocabulary 50), on the fuzz host backend; and the seed export: with
// SFT_FUZZ_SEED_OUT=DIR set, a target writes the seed files it derives from its fixture there.
#pragma once
#include <cstdlib>
#include <memory>
#include <string>

#include "fuzz_util.h"
#include "host_backend.h"
#include "model/llama.h"
#include "model/llama_config.h"

namespace sft::fuzz {

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

inline LlamaModel& tiny_model() {
  static HostBackend backend;
  static LlamaModel model(tiny_config(), backend);
  return model;
}

// Writes `bytes` as SFT_FUZZ_SEED_OUT/<name> when that variable is set.
inline void export_seed(const std::string& name, std::string_view bytes) {
  if (const char* out = std::getenv("SFT_FUZZ_SEED_OUT"); out && *out) write_file(std::string(out) + "/" + name, bytes);
}

}  // namespace sft::fuzz
