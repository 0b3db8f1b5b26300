// LlamaConfig: the hyper-parameters of a LLaMA-family model (LlamaForCausalLM, MistralForCausalLM,
// Qwen2ForCausalLM) read from / written to an HF config.json. Reference:
// transformers/models/llama/configuration_llama.py and modeling_rope_utils.py.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sft {

enum class RopeScaling { none, linear, dynamic, llama3 };

struct LlamaConfig {
  std::string architecture = "LlamaForCausalLM";  // architectures[0]
  std::string model_type = "llama";
  int64_t vocab_size = 32000;             // V
  int64_t hidden_size = 4096;             // C
  int64_t intermediate_size = 11008;      // FF
  int64_t num_hidden_layers = 32;         // L
  int64_t num_attention_heads = 32;       // NH
  int64_t num_key_value_heads = 32;       // NKV
  int64_t head_dim = 128;                 // HS (explicit in config, else C / NH)
  int64_t max_position_embeddings = 2048;
  // Mistral's (and Qwen2's use_sliding_window) attention window W, 0 = none.
  // sft has no sliding-window mask: it runs sequences of at most W tokens, where the window masks
  // nothing, and refuses longer ones (LlamaModel's passes, sft train, sft generate).
  int64_t sliding_window = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = RopeScaling::none;
  double rope_factor = 1.0;                        // linear, dynamic, llama3
  double rope_low_freq_factor = 1.0;               // llama3
  double rope_high_freq_factor = 4.0;              // llama3
  int64_t rope_original_max_position_embeddings = 0;  // llama3 (required), dynamic (optional)
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q, k, v and o (Llama's attention_bias)
  bool qkv_bias = false;        // bias on q, k, v only (Qwen2, always on)
  double initializer_range = 0.02;
  int64_t bos_token_id = 1;     // -1 when absent
  std::vector<int64_t> eos_token_ids{2};
  int64_t pad_token_id = -1;    // -1 when absent
  std::string torch_dtype = "float32";  // torch_dtype / dtype: "float32" | "bfloat16" | "float16"

  // The config.json it was read from (empty for presets): save_json() keeps its unknown keys.
  nlohmann::json source;

  int64_t qkv_dim() const { return (num_attention_heads + 2 * num_key_value_heads) * head_dim; }
  bool has_qkv_bias() const { return attention_bias || qkv_bias; }
  bool has_o_bias() const { return attention_bias; }
};

// Parse and validate; every problem is an Error naming the file and the field, e.g.
// "[config] model/config.json: num_attention_heads 12 is not divisible by num_key_value_heads 5".
LlamaConfig load_llama_config(const std::string& config_json_path);
LlamaConfig parse_llama_config(const nlohmann::json& j, const std::string& where);
void validate_llama_config(const LlamaConfig& cfg, const std::string& where);
// The HF config.json for cfg (legacy keys rope_theta / rope_scaling / torch_dtype, which every
// transformers version reads), over cfg.source so unknown keys survive a round trip.
nlohmann::json llama_config_to_json(const LlamaConfig& cfg);

// RoPE inverse frequencies (HS/2) with the config's scaling applied, in fp32 as HF computes them;
// seq_len matters only for dynamic scaling.
std::vector<float> rope_inv_freq(const LlamaConfig& cfg, int64_t seq_len);

}  // namespace sft
