// Fuzz target: `sft train --config FILE` (cli/options): the input is the YAML or JSON file, parsed
// with yaml-cpp and applied through the option table (names, types, ranges), then the resolved
// configuration is described as the run's echo does.
#include "cli/options.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sft;
  static const std::string path = fuzz::scratch_dir() + "/config.yaml";
  fuzz::write_file(path, fuzz::as_text(data, size));
  std::string a0 = "train", a1 = "--config", a2 = path;
  char* argv[] = {a0.data(), a1.data(), a2.data(), nullptr};
  fuzz::expect_clean([&] {
    const ParsedOptions p = parse_train_options(3, argv);
    (void)describe_train_config(p.config);
  });
  return 0;
}
