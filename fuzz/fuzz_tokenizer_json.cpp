// Fuzz target: a tokenizer.json (HF `tokenizers` pipeline: BPE model, normalizers, pre-tokenizers,
// post-processors, decoders; tokenizer/bpe_*, hf_pipeline, regex) with an optional
// tokenizer_config.json. Input: tokenizer.json [=====  tokenizer_config.json [===== text]]
// (parts cut at "\n=====\n"). A tokenizer that loads must encode the text (and fixed UTF-8 edge
// cases) to ids inside its vocabulary, and decode them.
#include <filesystem>

#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

namespace {

void check_round(const sft::Tokenizer& tok, std::string_view text) {
  for (bool special : {false, true}) {
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(text, special);
    } catch (const sft::Error&) {
      continue;  // invalid UTF-8, or a rule the tokenizer states it does not follow
    }
    for (int32_t id : ids)
      if (id < 0 || id >= tok.vocab_size()) std::abort();
    (void)tok.decode(ids, false);
    (void)tok.decode(ids, true);
    for (int32_t id : ids) (void)tok.id_to_token(id);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  const std::vector<std::string_view> parts = fuzz::split_parts(fuzz::as_text(data, size), 3);
  const std::string dir = fuzz::fresh_dir("tokenizer_json");
  fuzz::write_file(dir + "/tokenizer.json", parts[0]);
  if (parts.size() > 1) fuzz::write_file(dir + "/tokenizer_config.json", parts[1]);
  fuzz::expect_clean([&] {
    const std::unique_ptr<Tokenizer> tok = load_tokenizer(dir, TokenizerKind::json);
    (void)tok->bos_id(), (void)tok->eos_id(), (void)tok->unk_id(), (void)tok->pad_id();
    for (int32_t id : {tok->bos_id(), tok->eos_id(), tok->unk_id(), tok->pad_id()})
      if (id >= tok->vocab_size()) std::abort();
    if (parts.size() > 2) check_round(*tok, parts[2]);
    check_round(*tok, "Hello world!  \n\t x");
    check_round(*tok, "h\xC3\xA9llo \xE2\x9C\x93 \xF0\x9F\x98\x80 <s></s><unk>");
    check_round(*tok, std::string_view("a\0b", 3));
  });
  return 0;
}
