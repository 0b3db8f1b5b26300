// `sft train`: FastChat's train.py / train_mem.py flags in, an HF model directory out. Loads the
// model and tokenizer from --model_name_or_path, tokenizes the data with labels by construction,
// applies FastChat's RoPE rule, resumes from the newest complete checkpoint in output_dir (or
// --resume_from_checkpoint) and runs the training loop (train/trainer.cpp). Launched by mpirun or
// srun as N ranks, it trains data-parallel (--fsdp: no_shard / DDP with gradients all-reduced per
// unit, or the sharded full_shard and shard_grad_op of dist/sharded_store.h), each rank reads its
// rows of every global batch, and only rank 0 prints and writes.
#include <omp.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "backend/backend.h"
#include "cli/commands.h"
#include "core/file_hash.h"
#include "core/log.h"
#include "cli/options.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "dist/fsdp_config.h"
#include "dist/fsdp_mode.h"
#include "dist/replicated_store.h"
#include "dist/shared_dataset.h"
#include "dist/sharded_store.h"
#include "dist/world.h"
#include "io/checkpoint.h"
#include "io/hf_model.h"
#include "tokenizer/tokenizer.h"
#include "train/interrupt.h"
#include "core/file_util.h"
#include "train/memory_check.h"
#include "train/output_lock.h"
#include "train/trainer.h"

namespace sft {

namespace fs = std::filesystem;

namespace {

// tokenizer_config.json as HF Trainer saves the tokenizer FastChat trains with: model_max_length =
// --model_max_length, pad_token = the token the loader pads with (unk, else the base model's pad,
// else eos: data/loader.cpp pad_id_for), right padding. "" when the base model has no
// tokenizer_config.json (a tokenizer.json-only directory: nothing to adjust).
std::string trained_tokenizer_config(const std::string& model_dir, int64_t model_max_length) {
  const fs::path path = fs::path(model_dir) / "tokenizer_config.json";
  if (!fs::exists(path)) return "";
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(read_text_file(path.string(), "train"), nullptr, false);
  SFT_CHECK(!j.is_discarded() && j.is_object(), "train", "{}: not a JSON object", path.string());
  const auto has = [&](const char* k) { return j.contains(k) && !j[k].is_null(); };
  j["model_max_length"] = model_max_length;
  if (has("unk_token")) j["pad_token"] = j["unk_token"];
  else if (!has("pad_token") && has("eos_token")) j["pad_token"] = j["eos_token"];
  j["padding_side"] = "right";
  return j.dump(2) + "\n";
}

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
  double epoch() const override { return loader_.epoch_progress(); }  // no JSON state, no hash
  nlohmann::json state() const override { return loader_.state(); }
  void restore(const nlohmann::json& state) override { loader_.load_state(state); }

 private:
  DataLoader& loader_;
};

LoaderOptions loader_options(const TrainConfig& c, const Tokenizer& tok, int64_t batch, bool shuffle, const Comm& comm) {
  LoaderOptions o;
  o.rank = comm.rank();
  o.world_size = comm.size();
  o.batch_size = batch;
  o.max_length = c.model_max_length;
  o.packing = c.packing;
  o.shuffle = shuffle;
  o.seed = uint64_t(c.seed);
  o.pad_id = pad_id_for(tok);
  o.ignore_data_skip = c.ignore_data_skip;
  return o;
}

void require(const std::string& value, const char* flag) {
  SFT_CHECK(!value.empty(), "train", "--{} is required (sft train --help lists every option)", flag);
}

// Input paths are checked before anything is loaded; nothing is ever downloaded.
void require_inputs(const TrainConfig& cfg) {
  const fs::path model(cfg.model_name_or_path);
  SFT_CHECK(fs::is_directory(model), "train", "--model_name_or_path {}: {}", model.string(),
            fs::exists(model) ? "not a directory (an HF model directory is expected)"
                              : "no such directory (a local HF model directory; sft downloads nothing)");
  SFT_CHECK(fs::exists(model / "config.json"), "train", "--model_name_or_path {}: no config.json in it", model.string());
  for (auto [flag, path] : {std::pair{"data_path", &cfg.data_path}, std::pair{"eval_data_path", &cfg.eval_data_path}}) {
    if (path->empty()) continue;
    SFT_CHECK(fs::is_regular_file(*path), "train", "--{} {}: {}", flag, *path,
              fs::exists(*path) ? "not a regular file" : "no such file");
  }
}

// output_dir is created (with parents) and must take a file: better to learn that now than at the
// first checkpoint, hours in.
void require_writable_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  SFT_CHECK(!ec && fs::is_directory(dir), "train", "--output_dir {}: cannot create it: {}", dir,
            ec ? ec.message() : "a file of that name exists");
  const std::string probe = (fs::path(dir) / ".sft-write-test").string();
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  const int err = errno;
  SFT_CHECK(f != nullptr, "train", "--output_dir {} is not writable: {}", dir, std::strerror(err));
  const bool ok = std::fputs("ok", f) >= 0 && std::fclose(f) == 0;
  fs::remove(probe, ec);
  SFT_CHECK(ok, "train", "--output_dir {}: writing a test file failed", dir);
}

// The largest micro-batch the loader can produce: at most B rows, each at most model_max_length
// tokens, never more rows than the epoch has nor longer than the data (packing) or its longest
// sample (padding).
int64_t max_batch_tokens(const Dataset& data, const DataLoader& loader, const TrainConfig& cfg) {
  const int64_t rows = std::min<int64_t>(cfg.per_device_train_batch_size, std::max<int64_t>(1, loader.rows_per_epoch()));
  const int64_t longest = cfg.packing ? data.stats().tokens : std::min(data.stats().longest, cfg.model_max_length);
  return rows * std::max<int64_t>(1, std::min(cfg.model_max_length, longest));
}

// One rank's memory under a sharded mode: 1/N of the fp32 master weights, gradients and AdamW
// moments (units padded to a multiple of N), plus the full-size buffers of the units in flight:
// full_shard gathers 2 units (3 with tied embeddings, whose embedding stays gathered for the pass)
// and computes as many units' gradients before reduce-scattering them; shard_grad_op keeps the
// whole model (and the bf16 copies of all of it) besides its master shard. Under --bf16,
// full_shard also keeps its shard rounded to bf16 (what it sends in the bf16 gathers).
// Hybrid modes: the same within a node of `world` ranks (every node holds a replica).
MemoryPlan per_rank_plan(MemoryPlan plan, const LlamaConfig& cfg, ShardMode mode, int world) {
  Weights layout;
  std::vector<ParamUnit> units;
  lay_out_weights(cfg, nullptr, layout, Device::cpu, &units);
  int64_t shard = 0, largest = 0, padded = 0;
  for (const ParamUnit& u : units) {
    const int64_t len = (u.size + world - 1) / world;
    shard += len;
    padded += len * world;
    largest = std::max(largest, len * world);
  }
  const int64_t in_flight = (cfg.tie_word_embeddings ? 3 : 2) * largest;
  const bool whole = within_node(mode) == ShardMode::shard_grad_op;
  if (plan.weight_copies > 0) plan.weight_copies = 2 * (whole ? padded : in_flight) + (whole ? 0 : 2 * shard);
  plan.weights = 4 * (shard + (whole ? padded : in_flight));
  plan.grads = 4 * (shard + in_flight + (cfg.tie_word_embeddings ? 3 : 2) * (largest / world));
  plan.optimizer = 2 * 4 * shard;
  return plan;
}

// full_shard offload (fsdp_offload): per_rank_plan's parts split into what stays on the device (the
// units in flight: gather and gradient buffers, bf16 copies of fp32-gathered weights; the
// activations) and what lives in pinned host memory (the shards: fp32 master, its bf16 rounding,
// gradient sums, AdamW moments; 4 bytes each per shard element, i.e. a quarter of the moments).
struct OffloadPlan {
  MemoryPlan device, host;
};
OffloadPlan split_offload(const MemoryPlan& rank) {
  const int64_t shard4 = rank.optimizer / 2;
  OffloadPlan p{rank, {}};
  p.host.params = rank.params;
  p.host.weights = shard4;
  p.host.grads = shard4;
  p.host.optimizer = rank.optimizer;
  p.host.weight_copies = rank.weight_copies > 0 ? shard4 / 2 : 0;
  p.device.weights -= shard4;
  p.device.grads -= shard4;
  p.device.optimizer = 0;
  p.device.weight_copies -= p.host.weight_copies;
  p.device.data = 0;
  p.host.data = rank.data;
  return p;
}

std::string describe_host_part(const MemoryPlan& h) {
  return fmt::format("fp32 weights {}{}, gradients {}, AdamW moments {}{} = {}", human_bytes(h.weights),
                     h.weight_copies ? fmt::format(" (+ bf16 {})", human_bytes(h.weight_copies)) : "",
                     human_bytes(h.grads), human_bytes(h.optimizer),
                     h.data ? fmt::format(", tokenized data {}", human_bytes(h.data)) : "", human_bytes(h.total()));
}

// What every rank must agree on: the resolved options except paths that may differ per host, the
// data as a resume checks it (each file's size and XXH3, the template), what the ranks' joined
// parts of it hold (the tokenized content's XXH3), and the checkpoint the run resumes from.
Fingerprint config_fingerprint(const TrainConfig& cfg, const Dataset& train_data, const Dataset* eval_data,
                               const std::string& resume) {
  Fingerprint out;
  for (auto& [key, value] : train_config_values(cfg)) {
    if (key == "model_name_or_path" || key == "data_path" || key == "eval_data_path" || key == "output_dir" ||
        key == "resume_from_checkpoint" || key == "cache_dir" || key == "threads" || key == "local_rank" ||
        key == "fsdp_config")  // its effect (gradient_checkpointing) is compared
      continue;
    out.add("--" + key, value);
  }
  const Fingerprint train_id = train_data.identity();
  for (const FingerprintItem& it : train_id.items()) out.add(it.name + " (--data_path)", it.value);
  out.add("tokenized data XXH3 (--data_path)", xxh3_hex(train_data.content_xxh3()));
  if (eval_data) {
    const Fingerprint eval_id = eval_data->identity();
    for (const FingerprintItem& it : eval_id.items())
      if (it.name != "template") out.add(it.name + " (--eval_data_path)", it.value);
    out.add("tokenized data XXH3 (--eval_data_path)", xxh3_hex(eval_data->content_xxh3()));
  }
  out.add("--resume_from_checkpoint (the checkpoint found)", fs::path(resume).filename().string());
  return out;
}

}  // namespace

int run_train(int argc, char** argv) {
  // A launcher (mpirun, srun) may have started this process as one rank of several: only rank 0
  // prints; errors from every rank reach stderr prefixed with the rank.
  const LaunchInfo launch = detect_launch();
  set_process_rank(launch.rank, launch.size);
  if (launch.rank != 0 && !std::freopen("/dev/null", "w", stdout)) fail("train", "cannot silence stdout of rank {}", launch.rank);
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
  SFT_CHECK(cfg.save_strategy != IntervalStrategy::steps || cfg.save_steps >= 1, "train", "--save_steps must be >= 1, got {}",
            cfg.save_steps);
  std::vector<std::string> fsdp_notes;  // --fsdp_config: applied before the configuration is shown
  if (!cfg.fsdp_config.empty()) {
    const FsdpConfig fc = read_fsdp_config(cfg.fsdp_config, cfg.device);
    if (fc.activation_checkpointing) cfg.gradient_checkpointing = true;
    fsdp_notes = fc.notes;
  }
  std::printf("sft train, resolved configuration:\n%s", describe_train_config(cfg).c_str());
  for (const std::string& n : parsed.notices) std::printf("note: %s\n", n.c_str());
  for (const std::string& n : fsdp_notes) std::printf("note: %s\n", n.c_str());
  require_inputs(cfg);
  require_writable_dir(cfg.output_dir);
  // One writer per output_dir, checked before the model and data load (the trainer holds it too).
  const OutputDirLock output_lock(cfg.output_dir, launch.rank == 0);
  if (cfg.threads > 0) omp_set_num_threads(int(cfg.threads));
  else if (launch.local_size > 1) omp_set_num_threads(std::max(1, omp_get_num_procs() / launch.local_size));
  const std::optional<ShardMode> shard = parse_fsdp_mode(cfg.fsdp, launch.size, cfg.device);
  const bool offload = fsdp_offload(cfg.fsdp, cfg.device);  // GPU ranks: the shards in pinned host memory

  auto backend = create_backend(cfg.device, launch.size > 1 ? launch.local_rank : -1);  // a GPU per local rank
  backend->set_matmul_dtype(cfg.bf16 ? DType::bf16 : DType::f32);
  backend->set_tf32(cfg.tf32);
  const std::unique_ptr<Comm> comm = make_world_comm(*backend, launch);
  comm->set_timeout(cfg.ddp_timeout);  // the collective watchdog (dist/watchdog.h)
  if (comm->size() > 1)
    std::printf("data parallel: %d ranks (%s), %d threads each; --fsdp %s; global batch %ld rows\n", comm->size(),
                launch.launcher.c_str(), omp_get_max_threads(),
                (shard ? describe_shard_mode(*shard, cfg.bf16)
                       : std::string("no_shard: the whole model on every rank, gradients all-reduced per layer"))
                    .c_str(),
                long(cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * comm->size()));
  if (const std::string routes = backend->route_report(); !routes.empty())
    std::printf("%s%s", routes.c_str(), routes.back() == '\n' ? "" : "\n");
  const std::string& model_dir = cfg.model_name_or_path;
  LlamaConfig mcfg = load_llama_config((fs::path(model_dir) / "config.json").string());
  SFT_CHECK(mcfg.sliding_window == 0 || cfg.model_max_length <= mcfg.sliding_window, "train",
            "--model_max_length {} is longer than sliding_window {} in {}/config.json: sft has no sliding-window "
            "attention, so it trains sequences of up to {} tokens (where the window masks nothing); use "
            "--model_max_length {} or less",
            cfg.model_max_length, mcfg.sliding_window, model_dir, mcfg.sliding_window, mcfg.sliding_window);
  // FastChat's RoPE rule (train.py): train past the context with linear scaling, saved in config.json.
  if (cfg.model_max_length > mcfg.max_position_embeddings) {
    const double factor = std::ceil(double(cfg.model_max_length) / double(mcfg.max_position_embeddings));
    std::printf("note: --model_max_length %ld > max_position_embeddings %ld: linear RoPE scaling, factor %.0f "
                "(as FastChat); saved in config.json\n",
                long(cfg.model_max_length), long(mcfg.max_position_embeddings), factor);
    mcfg.rope_scaling = RopeScaling::linear;
    mcfg.rope_factor = factor;
  }
  auto tok = load_tokenizer(model_dir, parse_tokenizer_kind(cfg.tokenizer_kind));
  SFT_CHECK(tok->vocab_size() <= mcfg.vocab_size, "train", "{}: the tokenizer has {} tokens but the model's vocab_size is {}",
            model_dir, tok->vocab_size(), mcfg.vocab_size);

  // Will it fit? The model's part (weights, gradients, AdamW moments, bf16 copies) is checked
  // before the data is read, the data's while it is read, and the whole before a byte of the model
  // is allocated. The ranks on one node share its memory.
  int64_t available = available_memory_bytes();
  if (available > 0) available /= std::max(1, launch.local_size);
  const ModelOptions mopt{.recompute = cfg.gradient_checkpointing};
  const int copy_bytes = cfg.bf16 ? backend->bf16_weight_copy_bytes() : 0;
  const bool host_model = backend->device() == Device::cpu;  // a GPU backend checks its own device memory
  MemoryPlan model_plan = plan_training_memory(mcfg, mopt, 0, copy_bytes);
  if (shard) model_plan = per_rank_plan(model_plan, mcfg, *shard, shard_group_size(*shard, launch));
  if (host_model || offload)
    check_memory_fits(offload ? split_offload(model_plan).host : model_plan, available,
                      cfg.per_device_train_batch_size, cfg.model_max_length, cfg.gradient_checkpointing);

  DataOptions dopt;
  dopt.conversation_template = cfg.conversation_template;
  dopt.model_dir = model_dir;  // its chat template for "auto"
  dopt.model_max_length = cfg.model_max_length;
  dopt.strict = cfg.strict_data;
  if (available >= 0) {
    const int64_t model_bytes = host_model ? model_plan.total() : offload ? split_offload(model_plan).host.total() : 0;
    dopt.memory_budget = std::max<int64_t>(0, available - model_bytes);
    dopt.memory_budget_note = model_bytes ? fmt::format("free memory {} less the model's {}", human_bytes(available),
                                                        human_bytes(model_bytes))
                                          : fmt::format("free memory {}", human_bytes(available));
    if (launch.local_size > 1) dopt.memory_budget_note += fmt::format(", per rank of {} here", launch.local_size);
  }
  // Each rank tokenizes 1/N of the file; every rank then holds the same Dataset, so rank 0 reports it.
  const Dataset train_data = load_dataset_across_ranks(*comm, cfg.data_path, *tok, dopt);
  if (comm->rank() == 0) log_data_summary(train_data);
  SFT_CHECK(train_data.size() > 0, "train", "{}: no usable sample (see the issues above)", cfg.data_path);
  DataLoader loader(train_data, loader_options(cfg, *tok, cfg.per_device_train_batch_size, true, *comm));
  LoaderStream stream(loader);

  std::vector<Batch> eval_batches;
  std::unique_ptr<Dataset> eval_data;
  if (!cfg.eval_data_path.empty()) {
    if (dopt.memory_budget >= 0) {
      dopt.memory_budget = std::max<int64_t>(0, dopt.memory_budget - train_data.memory_bytes());
      dopt.memory_budget_note += fmt::format(" and the training data's {}", human_bytes(train_data.memory_bytes()));
    }
    eval_data = std::make_unique<Dataset>(load_dataset_across_ranks(*comm, cfg.eval_data_path, *tok, dopt));
    if (comm->rank() == 0) log_data_summary(*eval_data);
    DataLoader eval_loader(*eval_data, loader_options(cfg, *tok, cfg.per_device_eval_batch_size, false, *comm));
    for (Batch b; eval_loader.next(b);) eval_batches.push_back(b);
  } else if (cfg.evaluation_strategy != IntervalStrategy::no) {
    std::printf("note: --evaluation_strategy %s without --eval_data_path: no evaluation\n",
                enum_name(cfg.evaluation_strategy));
  }

  // The whole plan, the data included, against the memory free before the data was read.
  int64_t max_tokens = max_batch_tokens(train_data, loader, cfg);
  for (const Batch& b : eval_batches) max_tokens = std::max(max_tokens, b.num_tokens());
  MemoryPlan plan = plan_training_memory(mcfg, mopt, max_tokens, copy_bytes);
  if (shard) plan = per_rank_plan(plan, mcfg, *shard, shard_group_size(*shard, launch));
  plan.data = train_data.memory_bytes() + (eval_data ? eval_data->memory_bytes() : 0);
  for (const Batch& b : eval_batches)
    plan.data += int64_t(b.tokens.size() * sizeof(int32_t) * 3 + b.cu_seqlens.size() * sizeof(int32_t));
  const std::string parts = offload ? fmt::format("offload: on the device {}; in pinned host memory {}",
                                                  describe(split_offload(plan).device),
                                                  describe_host_part(split_offload(plan).host))
                                    : describe(plan);
  std::printf("memory%s: %s; %s\n", comm->size() > 1 ? " per rank" : "", parts.c_str(),
              available < 0 ? "free memory unknown"
                            : fmt::format("{:.1f} GiB available{}", double(available) / (1 << 30),
                                          launch.local_size > 1 ? fmt::format(" to each of {} ranks here", launch.local_size)
                                                                : "").c_str());
  if (offload) {
    check_memory_fits(split_offload(plan).host, available, cfg.per_device_train_batch_size, cfg.model_max_length,
                      cfg.gradient_checkpointing);
  } else if (host_model) {
    check_memory_fits(plan, available, cfg.per_device_train_batch_size, cfg.model_max_length, cfg.gradient_checkpointing);
  } else if (available >= 0 && plan.data > available) {
    MemoryPlan host;  // the data is in host memory whatever the device
    host.data = plan.data;
    check_memory_fits(host, available, cfg.per_device_train_batch_size, cfg.model_max_length, cfg.gradient_checkpointing);
  }
  std::unique_ptr<ParamStore> store;
  if (shard) store = std::make_unique<ShardedParamStore>(mcfg, *backend, *comm, *shard, ShardOptions{.offload = offload});
  else if (comm->size() > 1) store = std::make_unique<ReplicatedParamStore>(mcfg, *backend, *comm);
  LlamaModel model(mcfg, *backend, mopt, std::move(store));
  load_hf_weights(model_dir, model);

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
  files.tokenizer_config = trained_tokenizer_config(model_dir, cfg.model_max_length);

  check_same_config(*comm, config_fingerprint(cfg, train_data, eval_data.get(), resume));

  if (cfg.save_on_interrupt) install_interrupt_handlers();
  const TrainResult r = train(cfg, model, TrainerInputs{&stream, &eval_batches, files, resume}, comm.get());
  if (r.interrupted_by != 0) {
    std::printf("interrupted by %s after step %ld: saved %s; run the same command again to resume\n",
                signal_name(r.interrupted_by), long(r.steps), r.final_dir.c_str());
    return 128 + r.interrupted_by;
  }
  // Two losses, each named: the last step's, and the last logged one (metrics.jsonl, the progress
  // line and the plot: the mean over a logging window of --logging_steps steps, as HF logs it).
  std::printf("done: %ld steps; loss of the last step %.4f, last logged loss %.4f (step %ld, mean over its "
              "logging window); model saved in %s\n", long(r.steps), r.final_loss, r.last_logged_loss,
              long(r.last_logged_step), r.final_dir.c_str());
  return 0;
}

}  // namespace sft
