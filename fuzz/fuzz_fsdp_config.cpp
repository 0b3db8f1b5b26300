// Fuzz target: `sft train --fsdp_config FILE` (dist/fsdp_config): the input is HF's FSDP settings
// JSON, read with its size and nesting bounds, each key turned into a note or a setting.
#include "dist/fsdp_config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  static const std::string path = fuzz::scratch_dir() + "/fsdp_config.json";
  fuzz::write_file(path, fuzz::as_text(data, size));
  fuzz::expect_clean([&] {
    const FsdpConfig c = read_fsdp_config(path);
    size_t bytes = 0;
    for (const std::string& n : c.notes) bytes += n.size();
    (void)bytes;
  });
  return 0;
}
