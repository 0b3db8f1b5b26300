// Fuzz target: a model's config.json (model/llama_config): every architecture (Llama, Mistral,
// Qwen2) and rope_scaling shape (linear, dynamic, llama3, rope_type / type spellings). A config
// that validates must give finite RoPE frequencies and survive a round trip through
// llama_config_to_json unchanged in its hyper-parameters.
#include <cmath>
#include <cstdlib>

#include "fuzz_util.h"
#include "model/llama_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  static const std::string path = fuzz::scratch_dir() + "/config.json";
  fuzz::write_file(path, fuzz::as_text(data, size));
  fuzz::expect_clean([&] {
    const LlamaConfig cfg = load_llama_config(path);
    // Validated sizes are what the model allocates from: RoPE tables only for sane head sizes.
    if (cfg.head_dim > 0 && cfg.head_dim <= 4096) {
      const int64_t mp = cfg.max_position_embeddings;
      for (int64_t seq : {int64_t(1), mp, mp < (int64_t(1) << 40) ? 2 * mp + 1 : mp}) {
        const std::vector<float> inv = rope_inv_freq(cfg, seq);
        if (inv.size() != size_t(cfg.head_dim / 2)) std::abort();
        for (float f : inv)
          if (!std::isfinite(f)) std::abort();
      }
    }
    const LlamaConfig back = parse_llama_config(llama_config_to_json(cfg), "round trip");
    if (back.hidden_size != cfg.hidden_size || back.num_hidden_layers != cfg.num_hidden_layers ||
        back.num_key_value_heads != cfg.num_key_value_heads || back.head_dim != cfg.head_dim ||
        back.rope_scaling != cfg.rope_scaling || back.vocab_size != cfg.vocab_size ||
        back.architecture != cfg.architecture)
      std::abort();
  });
  return 0;
}
