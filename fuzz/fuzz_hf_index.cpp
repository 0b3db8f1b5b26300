// Fuzz target: the sharded weights index model.safetensors.index.json (io/hf_model): the input
// replaces the index of a real sharded save of the tiny model (two shards beside it) and the
// weights are loaded through load_hf_weights. Paths outside the directory, unknown or missing
// tensors and non-string entries must be sft::Errors.
#include <filesystem>

#include "core/file_util.h"
#include "io/hf_model.h"
#include "model_fixture.h"

namespace {

const std::string& model_dir() {
  static const std::string dir = [] {
    const std::string d = sft::fuzz::fresh_dir("hf_index");
    sft::SaveOptions opt;
    opt.max_shard_bytes = 40'000;  // a few shards
    sft::save_hf_model(sft::fuzz::tiny_model(), d, opt);
    sft::fuzz::export_seed("index.json", sft::read_text_file(d + "/model.safetensors.index.json", "fuzz"));
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  const std::string& dir = model_dir();
  fuzz::write_file(dir + "/model.safetensors.index.json", fuzz::as_text(data, size));
  fuzz::expect_clean([&] { load_hf_weights(dir, fuzz::tiny_model()); });
  return 0;
}
