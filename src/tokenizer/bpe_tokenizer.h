// tokenizer.json (HF fast `tokenizers` 0.19 format) with a BPE model: added tokens, normalizer,
// pre-tokenizer, BPE, post-processor and decoder as described by the file.
#pragma once
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace sft {

// Loads `dir`/tokenizer.json (and tokenizer_config.json for the special token names).
std::unique_ptr<Tokenizer> load_json_tokenizer(const std::string& dir);

}  // namespace sft
