// `sft init`: writes a randomly initialised, loadable HF model directory (config.json,
// model.safetensors, generation_config.json, the tokenizer files copied) from a preset or a
// config.json, with the vocabulary sized to the tokenizer.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>

#include "backend/backend.h"
#include "cli/commands.h"
#include "io/hf_model.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/presets.h"
#include "tokenizer/tokenizer.h"
#include "train/memory_check.h"

namespace sft {

namespace fs = std::filesystem;

int run_init(int argc, char** argv) {
  CLI::App app{"sft init: write a randomly initialised HF model directory", "sft init"};
  std::string preset_arg, tokenizer_dir, output_dir, dtype = "bf16";
  uint64_t seed = 42;
  app.add_option("--preset", preset_arg, "tiny | small | base | 1b | path/to/config.json")->required();
  app.add_option("--tokenizer", tokenizer_dir, "directory with tokenizer.model or tokenizer.json")->required();
  app.add_option("--output_dir", output_dir, "where to write the model directory")->required();
  app.add_option("--seed", seed, "initialisation seed")->capture_default_str();
  app.add_option("--dtype", dtype, "saved weight dtype: bf16 | fp32")->capture_default_str()
      ->check(CLI::IsMember({"bf16", "fp32"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  LlamaConfig cfg = preset_arg.ends_with(".json") ? load_llama_config(preset_arg) : get_preset(preset_arg).config;
  auto tokenizer = load_tokenizer(tokenizer_dir);
  // Vocabulary sized to the tokenizer, as HF's resize_token_embeddings(len(tokenizer)).
  cfg.vocab_size = tokenizer->vocab_size();
  cfg.bos_token_id = tokenizer->bos_id();
  if (tokenizer->eos_id() >= 0) cfg.eos_token_ids = {tokenizer->eos_id()};
  cfg.pad_token_id = tokenizer->pad_id();
  cfg.torch_dtype = dtype == "bf16" ? "bfloat16" : "float32";
  validate_llama_config(cfg, "--preset " + preset_arg);

  // Will it fit? Stated and checked before a byte of the model is allocated (the config parser's
  // bound lets through models of trillions of bytes).
  const MemoryPlan plan = plan_model_memory(cfg, 0);
  const int64_t available = available_memory_bytes();
  std::printf("memory: %s; %s\n", describe_model_memory(plan).c_str(), describe_available(available).c_str());
  check_model_memory_fits("init", "the model of --preset " + preset_arg, plan, available);
  auto backend = create_backend("cpu");
  LlamaModel model(cfg, *backend);
  init_weights(model, seed);
  fs::create_directories(output_dir);
  save_hf_model(model, output_dir, SaveOptions{.dtype = dtype == "bf16" ? DType::bf16 : DType::f32});
  write_generation_config(cfg, output_dir);
  for (const std::string& f : tokenizer_files(tokenizer_dir))
    fs::copy_file(fs::path(tokenizer_dir) / f, fs::path(output_dir) / f, fs::copy_options::overwrite_existing);
  std::printf("wrote %s: %s-shaped LlamaForCausalLM, %.1fM parameters, vocab %ld, %s weights\n",
              output_dir.c_str(), preset_arg.c_str(), double(model.num_params()) / 1e6, long(cfg.vocab_size),
              dtype.c_str());
  return 0;
}

}  // namespace sft
