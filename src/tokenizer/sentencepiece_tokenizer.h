// tokenizer.model through libsentencepiece with the semantics of HF's slow LlamaTokenizer
// (transformers 4.40): BOS/EOS by add_bos_token/add_eos_token, special and added tokens split out
// of the text, the `legacy` flag's dummy-prefix rule after special tokens, HF's decode.
#pragma once
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace sft {

// Loads `dir`/tokenizer.model with the config files of `dir`.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& dir);

}  // namespace sft
