// Fuzz target: tokenizer.model bytes through our SentencePiece loading path
// (tokenizer/sentencepiece_tokenizer: the wire-format scan of the ModelProto fields we read,
// then the sentencepiece library's own load) and, when it loads, encode and decode of a fixed text.
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  const std::string dir = fuzz::fresh_dir("sentencepiece");
  fuzz::write_file(dir + "/tokenizer.model", fuzz::as_text(data, size));
  fuzz::expect_clean([&] {
    const std::unique_ptr<Tokenizer> tok = load_tokenizer(dir, TokenizerKind::sentencepiece);
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = tok->encode("Hello w\xC3\xB6rld  \xE2\x9C\x93 <s> 12345", special);
      for (int32_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) std::abort();
      (void)tok->decode(ids, special);
    }
  });
  return 0;
}
