// --fsdp_config (dist/fsdp_config.h): HF's keys with and without accelerate's "fsdp_" prefix, each
// honoured or noted once; activation_checkpointing turns gradient
// checkpointing on; parameter offload is noted on CPU ranks (nothing to move) and an error on GPU
// ranks (not built); values of the wrong type and malformed files are errors naming the file and
// the key.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/check.h"
#include "dist/fsdp_config.h"

namespace sft {
namespace {

namespace fs = std::filesystem;

std::string write(const std::string& name, const std::string& text) {
  const fs::path p = fs::temp_directory_path() / ("sft_fsdp_config_" + name + ".json");
  std::ofstream(p) << text;
  return p.string();
}

std::string error_of(const std::string& path, const std::string& device = "cpu") {
  try {
    read_fsdp_config(path, device);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(FsdpConfig, EveryKeyIsHonouredOrNotedOnce) {
  const std::string path = write("full", R"({
    "fsdp_min_num_params": 1000000,
    "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
    "fsdp_backward_prefetch": "backward_pre",
    "forward_prefetch": false,
    "limit_all_gathers": true,
    "activation_checkpointing": "true",
    "fsdp_offload_params": false,
    "sync_module_states": true,
    "cpu_ram_efficient_loading": true,
    "use_orig_params": true,
    "xla": false,
    "mystery_knob": 3
  })");
  const FsdpConfig c = read_fsdp_config(path);
  EXPECT_TRUE(c.activation_checkpointing);
  ASSERT_EQ(c.notes.size(), 12u);
  const char* starts[] = {"--fsdp_config min_num_params = 1000000: not used",
                          "--fsdp_config transformer_layer_cls_to_wrap = [\"LlamaDecoderLayer\"]: accepted",
                          "--fsdp_config backward_prefetch = \"backward_pre\": honoured",
                          "--fsdp_config forward_prefetch = false: sft always prefetches",
                          "--fsdp_config limit_all_gathers = true: honoured",
                          "--fsdp_config activation_checkpointing = \"true\": honoured: gradient checkpointing on",
                          "--fsdp_config offload_params = false: honoured: no offload",
                          "--fsdp_config sync_module_states = true: every rank starts from the same weights",
                          "--fsdp_config cpu_ram_efficient_loading = true: not used",
                          "--fsdp_config use_orig_params = true: not used",
                          "--fsdp_config xla = false: not used: XLA",
                          "--fsdp_config mystery_knob = 3: ignored: not an FSDP setting sft knows"};
  for (const char* s : starts) {
    const auto n = std::count_if(c.notes.begin(), c.notes.end(), [&](const std::string& x) { return x.rfind(s, 0) == 0; });
    EXPECT_EQ(n, 1) << s;
  }
  EXPECT_FALSE(read_fsdp_config(write("off", R"({"activation_checkpointing": false})")).activation_checkpointing);
  EXPECT_TRUE(read_fsdp_config(write("empty", "{}")).notes.empty());
}

TEST(FsdpConfig, OffloadWrongTypesAndMalformedFilesAreNamedErrors) {
  const std::string offload = write("offload", R"({"fsdp_offload_params": true})");
  EXPECT_NE(error_of(offload, "cuda").find(offload + ": 'fsdp_offload_params' true on --device cuda asks for parameter "
                                                     "offload"), std::string::npos)
      << error_of(offload, "cuda");
  // CPU ranks: the state is in host memory already; noted, not refused.
  const FsdpConfig cpu = read_fsdp_config(offload, "cpu");
  ASSERT_EQ(cpu.notes.size(), 1u);
  EXPECT_NE(cpu.notes[0].find("offload_params = true: CPU ranks: the model state is in host memory already"),
            std::string::npos) << cpu.notes[0];
  const std::string type = write("type", R"({"limit_all_gathers": 2})");
  EXPECT_NE(error_of(type).find(type + ": 'limit_all_gathers' must be true or false, got 2"), std::string::npos)
      << error_of(type);
  const std::string list = write("list", R"(["full_shard"])");
  EXPECT_NE(error_of(list).find("expected a JSON object of FSDP settings, got array"), std::string::npos) << error_of(list);
  const std::string bad = write("bad", R"({"forward_prefetch": tru})");
  EXPECT_NE(error_of(bad).find(bad + ": not valid JSON"), std::string::npos) << error_of(bad);
  const std::string deep = write("deep", std::string(100, '[') + std::string(100, ']'));
  EXPECT_NE(error_of(deep).find("nested more than 16 levels deep"), std::string::npos) << error_of(deep);
  EXPECT_NE(error_of("/nonexistent/fsdp.json").find("/nonexistent/fsdp.json"), std::string::npos);
}

}  // namespace
}  // namespace sft
