// `sft train`: FastChat's train.py / train_mem.py flags in, an HF model directory out. Loads the
// model and tokenizer from --model_name_or_path, tokenizes the data with labels by construction,
// applies FastChat's RoPE rule, resumes from the newest complete checkpoint in output_dir (or
// --resume_from_checkpoint) and runs the training loop (train/trainer.cpp).
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "backend/backend.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "io/checkpoint.h"
#include "io/hf_model.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace sft {

namespace fs = std::filesystem;

namespace {

// DataLoader as the trainer's endless stream of micro-batches.
class LoaderStream final : public BatchStream {
 public:
  explicit LoaderStream(DataLoader& loader) : loader_(loader) {}
  Batch next() override {
    Batch b;
    while (!loader_.next(b)) {}  // false marks an epoch's end; the next call starts the next epoch
    return b;
  }
  int64_t batches_per_epoch() const override { return loader_.batches_per_epoch(); }
  double epoch() const override {
    const nlohmann::json s = loader_.state();
    const double rows = double(std::max<int64_t>(1, loader_.rows_per_epoch()));
    return std::max(0.0, double(s["epoch"].get<int64_t>()) + double(s["row"].get<int64_t>()) / rows);
  }
  nlohmann::json state() const override { return loader_.state(); }
  void restore(const nlohmann::json& state) override { loader_.load_state(state); }

 private:
  DataLoader& loader_;
};

LoaderOptions loader_options(const TrainConfig& c, const Tokenizer& tok, int64_t batch, bool shuffle) {
  LoaderOptions o;
  o.batch_size = batch;
  o.max_length = c.model_max_length;
  o.packing = c.packing;
  o.shuffle = shuffle;
  o.seed = uint64_t(c.seed);
  o.pad_id = pad_id_for(tok);
  return o;
}

void require(const std::string& value, const char* flag) {
  SFT_CHECK(!value.empty(), "train", "--{} is required (sft train --help lists every option)", flag);
}

}  // namespace

int run_train(int argc, char** argv) {
  ParsedOptions parsed = parse_train_options(argc, argv);
  if (parsed.help) {
    std::fputs(train_options_help().c_str(), stdout);
    return 0;
  }
  TrainConfig cfg = parsed.config;
  require(cfg.model_name_or_path, "model_name_or_path");
  require(cfg.data_path, "data_path");
  require(cfg.output_dir, "output_dir");
  SFT_CHECK(!cfg.fp16, "train", "--fp16 is not supported: use --bf16 True (bf16 needs no loss scaling)");
  SFT_CHECK(cfg.model_max_length >= 2, "train", "--model_max_length must be at least 2, got {}", cfg.model_max_length);
  SFT_CHECK(cfg.per_device_train_batch_size >= 1, "train", "--per_device_train_batch_size must be >= 1, got {}",
            cfg.per_device_train_batch_size);
  SFT_CHECK(cfg.logging_steps >= 1, "train", "--logging_steps must be >= 1, got {}", cfg.logging_steps);
  SFT_CHECK(cfg.save_strategy != "steps" || cfg.save_steps >= 1, "train", "--save_steps must be >= 1, got {}",
            cfg.save_steps);
  std::printf("sft train, resolved configuration:\n%s", describe_train_config(cfg).c_str());
  for (const std::string& n : parsed.notices) std::printf("note: %s\n", n.c_str());
  if (cfg.threads > 0) omp_set_num_threads(int(cfg.threads));

  auto backend = create_backend(cfg.device);
  backend->set_matmul_dtype(cfg.bf16 ? DType::bf16 : DType::f32);
  const std::string& model_dir = cfg.model_name_or_path;
  LlamaConfig mcfg = load_llama_config((fs::path(model_dir) / "config.json").string());
  // FastChat's RoPE rule (train.py): train past the context with linear scaling, saved in config.json.
  if (cfg.model_max_length > mcfg.max_position_embeddings) {
    const double factor = std::ceil(double(cfg.model_max_length) / double(mcfg.max_position_embeddings));
    std::printf("note: --model_max_length %ld > max_position_embeddings %ld: linear RoPE scaling, factor %.0f "
                "(as FastChat); saved in config.json\n",
                long(cfg.model_max_length), long(mcfg.max_position_embeddings), factor);
    mcfg.rope_scaling = RopeScaling::linear;
    mcfg.rope_factor = factor;
  }
  LlamaModel model(mcfg, *backend, ModelOptions{.recompute = cfg.gradient_checkpointing});
  load_hf_weights(model_dir, model);
  auto tok = load_tokenizer(model_dir, parse_tokenizer_kind(cfg.tokenizer_kind));
  SFT_CHECK(tok->vocab_size() <= mcfg.vocab_size, "train", "{}: the tokenizer has {} tokens but the model's vocab_size is {}",
            model_dir, tok->vocab_size(), mcfg.vocab_size);

  DataOptions dopt;
  dopt.conversation_template = cfg.conversation_template;
  dopt.model_max_length = cfg.model_max_length;
  dopt.strict = cfg.strict_data;
  const Dataset train_data = load_dataset(cfg.data_path, *tok, dopt);
  log_data_summary(train_data);
  SFT_CHECK(train_data.size() > 0, "train", "{}: no usable sample (see the issues above)", cfg.data_path);
  DataLoader loader(train_data, loader_options(cfg, *tok, cfg.per_device_train_batch_size, true));
  LoaderStream stream(loader);

  std::vector<Batch> eval_batches;
  std::unique_ptr<Dataset> eval_data;
  if (!cfg.eval_data_path.empty()) {
    eval_data = std::make_unique<Dataset>(load_dataset(cfg.eval_data_path, *tok, dopt));
    log_data_summary(*eval_data);
    DataLoader eval_loader(*eval_data, loader_options(cfg, *tok, cfg.per_device_eval_batch_size, false));
    for (Batch b; eval_loader.next(b);) eval_batches.push_back(b);
  } else if (cfg.evaluation_strategy != "no") {
    std::printf("note: --evaluation_strategy %s without --eval_data_path: no evaluation\n", cfg.evaluation_strategy.c_str());
  }

  // Resume as FastChat does: the newest complete checkpoint in output_dir, unless one is named.
  std::string resume = cfg.resume_from_checkpoint;
  if (resume.empty()) {
    if (auto latest = find_latest_checkpoint(cfg.output_dir)) resume = *latest;
  } else {
    SFT_CHECK(is_complete_checkpoint(resume), "train", "--resume_from_checkpoint {}: not a complete checkpoint (no {})",
              resume, kCheckpointManifest);
  }
  CheckpointFiles files{model_dir, tokenizer_files(model_dir)};
  if (fs::exists(fs::path(model_dir) / "generation_config.json")) files.extra_files.push_back("generation_config.json");

  const TrainResult r = train(cfg, model, TrainerInputs{&stream, &eval_batches, files, resume});
  std::printf("done: %ld steps, final loss %.4f; model saved in %s\n", long(r.steps), r.final_loss, r.final_dir.c_str());
  return 0;
}

}  // namespace sft
