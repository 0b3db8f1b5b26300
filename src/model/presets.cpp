// The preset table of design.md §9, as one aligned table (plus 7b: LLaMA-2-7B's shapes, for the
// GPU check of --fsdp "full_shard offload", usually with fewer layers: sft bench --num_layers).
#include "model/presets.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/check.h"

namespace sft {

namespace {

struct Row {
  const char* name;
  int64_t dim, layers, heads, kv_heads, ffn, seq, batch;
};

//                         name     dim  layers heads kv  ffn   seq   batch
constexpr Row kPresets[] = {{"tiny",   288,  6,    6,    6,  768,  256,  8},
                            {"small",  512,  8,    8,    8,  1376, 512,  4},
                            {"base",   768,  12,   12,   12, 2048, 1024, 2},
                            {"1b",     2048, 22,   32,   4,  5632, 2048, 1},
                            {"7b",     4096, 32,   32,   32, 11008, 2048, 1}};  // LLaMA-2-7B's widths

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const Row& r : kPresets) names.push_back(r.name);
  return names;
}

Preset get_preset(const std::string& name) {
  for (const Row& r : kPresets) {
    if (name != r.name) continue;
    LlamaConfig c;
    c.vocab_size = 32000;
    c.hidden_size = r.dim;
    c.intermediate_size = r.ffn;
    c.num_hidden_layers = r.layers;
    c.num_attention_heads = r.heads;
    c.num_key_value_heads = r.kv_heads;
    c.head_dim = r.dim / r.heads;
    c.max_position_embeddings = std::max<int64_t>(2048, r.seq);
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    c.tie_word_embeddings = false;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
    return {r.name, c, r.seq, r.batch};
  }
  fail("preset", "unknown preset '{}', expected one of: {}", name, fmt::join(preset_names(), ", "));
}

}  // namespace sft
