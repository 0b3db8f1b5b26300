// Fuzz target: a safetensors file (8-byte header length, JSON header, byte buffer) opened with
// SafetensorsFile, which must validate everything; every tensor it accepts is then read whole
// (ASan checks that data..data+nbytes lies inside the mapping) and its name looked up.
#include <cstring>

#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  static const std::string path = fuzz::scratch_dir() + "/model.safetensors";
  fuzz::write_file(path, fuzz::as_text(data, size));
  fuzz::expect_clean([&] {
    SafetensorsFile f(path);
    volatile uint8_t sink = 0;
    for (const SafetensorsTensorInfo& t : f.tensors()) {
      if (f.find(t.name) != &t) std::abort();
      if (t.end < t.begin) std::abort();
      for (uint64_t i = 0; i < t.nbytes(); ++i) sink = sink ^ t.data[i];
      (void)t.numel();
      (void)t.shape_str();
      if (const size_t es = safetensors_dtype_size(t.dtype); es && t.nbytes() != safetensors_nbytes(t.dtype, t.shape))
        std::abort();  // a tensor whose byte length does not match dtype x shape was accepted
    }
    for (const auto& [k, v] : f.metadata()) sink = sink ^ uint8_t(k.size() + v.size());
  });
  return 0;
}
