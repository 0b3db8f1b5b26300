// Fuzz target: the tokenizer's side files (tokenizer/tokenizer_config): tokenizer_config.json,
// special_tokens_map.json and added_tokens.json beside the shipped LLaMA-2 tokenizer.model, loaded
// as the SentencePiece tokenizer (the path FastChat takes). Input: tokenizer_config.json
// [===== special_tokens_map.json [===== added_tokens.json]]. Special ids must lie in the id space
// and a text with the special tokens written in it must encode and decode.
#include <filesystem>

#include "core/file_util.h"
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  static const std::string dir = [] {
    const std::string d = fuzz::fresh_dir("tokenizer_config");
    std::filesystem::create_symlink(fuzz::llama2_tokenizer_dir() + "/tokenizer.model", d + "/tokenizer.model");
    return d;
  }();
  static const char* kNames[] = {"tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"};
  const std::vector<std::string_view> parts = fuzz::split_parts(fuzz::as_text(data, size), 3);
  for (size_t i = 0; i < 3; ++i) {
    std::filesystem::remove(dir + "/" + kNames[i]);
    if (i < parts.size()) fuzz::write_file(dir + "/" + kNames[i], parts[i]);
  }
  fuzz::expect_clean([&] { (void)read_tokenizer_config(dir); });
  fuzz::expect_clean([&] {
    const std::unique_ptr<Tokenizer> tok = load_tokenizer(dir, TokenizerKind::sentencepiece);
    for (int32_t id : {tok->bos_id(), tok->eos_id(), tok->unk_id(), tok->pad_id()})
      if (id < -1 || id >= tok->vocab_size()) std::abort();
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = tok->encode("<s>[INST] Hi </s> <unk><pad> x", special);
      for (int32_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) std::abort();
      (void)tok->decode(ids, true);
    }
  });
  return 0;
}
