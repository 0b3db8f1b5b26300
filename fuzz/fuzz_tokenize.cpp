// Fuzz target: `sft tokenize` input text (UTF-8 edge cases: invalid sequences, overlongs,
// surrogates, NUL, long runs) through encode -> decode with the shipped LLaMA-2 SentencePiece
// tokenizer and a byte-level tokenizer.json without added tokens (a tokenizer_json seed). Invalid
// UTF-8 must be an sft::Error; valid text must give ids in the vocabulary, and the byte-level
// tokenizer must decode them back to the very text.
#include <filesystem>

#include "core/file_util.h"
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  static const std::unique_ptr<Tokenizer> sp = load_tokenizer(fuzz::llama2_tokenizer_dir(), TokenizerKind::sentencepiece);
  static const std::unique_ptr<Tokenizer> bl = [] {
    const std::string dir = fuzz::fresh_dir("tokenize_bytelevel");
    std::filesystem::copy_file(std::string(SFT_SOURCE_DIR) + "/tests/fuzz/corpus/tokenizer_json/byte_level_plain.json",
                               dir + "/tokenizer.json");
    return load_tokenizer(dir, TokenizerKind::json);
  }();
  const std::string_view text = fuzz::as_text(data, size);
  for (const Tokenizer* tok : {sp.get(), bl.get()}) {
    bool encoded = false;
    std::vector<int32_t> ids;
    fuzz::expect_clean([&] {
      ids = tok->encode(text, tok == sp.get());
      encoded = true;
    });
    if (!encoded) continue;
    for (int32_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) std::abort();
    fuzz::expect_clean([&] {
      const std::string back = tok->decode(ids, false);
      if (tok == bl.get() && back != text) std::abort();  // byte-level BPE is lossless
    });
  }
  return 0;
}
