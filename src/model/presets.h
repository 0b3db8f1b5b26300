// Model presets for `sft init` and `sft bench` (design.md §9): LLaMA shapes with an untied LM
// head and vocab 32000 (LLaMA-2 tokenizer), plus the benchmark's sequence length and batch.
#pragma once
#include <string>
#include <vector>

#include "model/llama_config.h"

namespace sft {

struct Preset {
  std::string name;
  LlamaConfig config;
  int64_t seq_len;  // T used by `sft bench`
  int64_t batch;    // B used by `sft bench`
};

// tiny | small | base | 1b | 7b; unknown names are an error listing the known ones.
Preset get_preset(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace sft
