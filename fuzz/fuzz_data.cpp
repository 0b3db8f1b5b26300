// Fuzz target: a chat data file through the whole data pipeline (data/sample_reader, conversation,
// chat_template, sample_encoder, dataset): the splitter (JSON array or JSON Lines), the format
// detector, the ShareGPT / messages / Alpaca readers with tool calls, validation, a built-in
// template, tokenization with the shipped LLaMA-2 tokenizer and labels. The first input byte
// picks the format and template; the rest is the file. Every kept sample must have ids inside the
// vocabulary, labels that are its ids or -100, and a length within model_max_length.
#include "core/file_util.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerInitialize(int*, char***);

int LLVMFuzzerInitialize(int*, char***) {
  setenv("OMP_NUM_THREADS", "1", 1);  // one core per fuzzer, deterministic runs
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  if (size == 0) return 0;
  static const std::unique_ptr<Tokenizer> tok = load_tokenizer(fuzz::llama2_tokenizer_dir());
  static const std::vector<std::string_view> templates = template_names();
  static const DataFormat kFormats[] = {DataFormat::auto_, DataFormat::sharegpt, DataFormat::messages,
                                        DataFormat::alpaca};
  const uint8_t pick = data[0];
  const std::string_view file = fuzz::as_text(data + 1, size - 1);
  const std::string path = fuzz::scratch_dir() + ((pick & 0x80) ? "/data.jsonl" : "/data.json");
  fuzz::write_file(path, file);
  DataOptions opt;
  opt.format = kFormats[pick & 3];
  opt.conversation_template = std::string(templates[(pick >> 2) % templates.size()]);
  opt.model_max_length = (pick & 0x40) ? 16 : 256;
  fuzz::expect_clean([&] {
    const Dataset d = load_dataset(path, *tok, opt);
    const DataStats& s = d.stats();
    if (s.kept != d.size() || s.kept + s.invalid + s.dropped != s.samples) std::abort();
    for (int64_t i = 0; i < d.size(); ++i) {
      const auto ids = d.ids(i);
      const auto train = d.train(i);
      const std::vector<int32_t> labels = d.labels(i);
      if (ids.size() != train.size() || labels.size() != ids.size()) std::abort();
      if (int64_t(ids.size()) > opt.model_max_length || ids.empty()) std::abort();
      bool any = false;
      for (size_t t = 0; t < ids.size(); ++t) {
        if (ids[t] < 0 || ids[t] >= tok->vocab_size()) std::abort();
        if (labels[t] != (train[t] ? ids[t] : -100)) std::abort();
        any |= train[t] != 0;
      }
      if (!any) std::abort();  // a kept sample has a trainable token
    }
    for (const SampleIssue& issue : d.issues()) (void)describe_issue(path, issue);
  });
  return 0;
}
