// `sft bench`: times full training steps (train_step(): forward, backward, the step's reductions,
// clipping, AdamW — the trainer's own step) of a preset model on random tokens and reports
// tokens/s, achieved GFLOP/s and MFU (train/flops.h, the trainer's definition) and peak RSS; on --device cuda also the GPU and its peak memory (the backend's
// high-water mark), with MFU against the H100/H200 dense peak. Under mpirun / srun each rank
// trains its own random rows with --fsdp's mode (dist/fsdp_mode.h) and rank 0 reports every
// rank's tokens/s, exposed communication and peak RSS. --json puts one JSON object on the last line.
#include <sys/resource.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "backend/profiling.h"
#include "cli/commands.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/presets.h"
#include "core/log.h"
#include "dist/comm.h"
#include "dist/fsdp_mode.h"
#include "dist/replicated_store.h"
#include "dist/sharded_store.h"
#include "dist/timed_comm.h"
#include "dist/world.h"
#include "train/flops.h"
#include "train/optimizer.h"
#include "train/train_step.h"

namespace sft {

namespace {

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

}  // namespace

int run_bench(int argc, char** argv) {
  CLI::App app{"sft bench: time full training steps of a preset model on random tokens", "sft bench"};
  std::string preset_name = "tiny", dtype = "bf16", device = "cpu";
  int steps = 5, warmup = 1, threads = 0;
  double peak_gflops = 0.0;
  bool json = false, recompute = false, profile = false, tf32 = false;
  app.add_option("--preset", preset_name, "tiny | small | base | 1b | 7b")->capture_default_str();
  app.add_option("--dtype", dtype, "GEMM precision: fp32 | bf16")->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--steps", steps, "timed steps")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads (0 = all cores)")->capture_default_str();
  app.add_option("--peak_gflops", peak_gflops,
                 "peak for MFU (default: cpu measured at start with register-only FMA / vdpbf16ps loops on the bench's threads; "
                 "cuda 989000 bf16, 494500 tf32, 67000 fp32, H100/H200 SXM dense)");
  app.add_option("--device", device, "cpu | cuda")->capture_default_str();
  int64_t batch_size = 0, seq_len = 0, num_layers = 0;
  app.add_option("--batch_size", batch_size, "rows per step (default: the preset's)");
  app.add_option("--seq_len", seq_len, "tokens per row (default: the preset's)");
  app.add_option("--num_layers", num_layers, "decoder layers (default: the preset's; fewer to fit a machine)");
  app.add_flag("--gradient_checkpointing", recompute, "recompute each layer's activations in backward");
  app.add_flag("--tf32", tf32, "TF32 tensor cores for fp32 GEMMs (GPU only)");
  app.add_flag("--profile", profile, "print time per op (each op timed separately; slows the run a little)");
  app.add_flag("--json", json, "print one JSON object as the last line");
  std::string fsdp;
  app.add_option("--fsdp", fsdp, "under mpirun/srun: full_shard | shard_grad_op | hybrid_shard | hybrid_shard_zero2 | no_shard (default: no_shard, DDP); \"full_shard offload\" on --device cuda, also one rank");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // Launched as one rank of several: only rank 0 prints; threads default to this node's cores
  // shared among its ranks, as in sft train.
  const LaunchInfo launch = detect_launch();
  set_process_rank(launch.rank, launch.size);
  if (launch.rank != 0 && !std::freopen("/dev/null", "w", stdout)) fail("bench", "cannot silence stdout of rank {}", launch.rank);
  if (threads > 0) omp_set_num_threads(threads);
  else if (launch.local_size > 1) omp_set_num_threads(std::max(1, omp_get_num_procs() / launch.local_size));
  const std::optional<ShardMode> shard = parse_fsdp_mode(fsdp, launch.size, device);
  const bool offload = fsdp_offload(fsdp, device);
  const bool gpu = device == "cuda";
  std::string peak_how = "given with --peak_gflops";
  if (peak_gflops <= 0) {
    const PeakInfo peak = default_peak(gpu ? Device::cuda : Device::cpu, dtype == "bf16" ? DType::bf16 : DType::f32, tf32);
    peak_gflops = peak.gflops;
    peak_how = peak.how;
  }

  Preset preset = get_preset(preset_name);
  if (batch_size > 0) preset.batch = batch_size;  // e.g. the shapes of a training run, to compare
  if (seq_len > 0) preset.seq_len = seq_len;
  if (num_layers > 0) preset.config.num_hidden_layers = num_layers;
  std::unique_ptr<Backend> backend = create_backend(device, launch.size > 1 ? launch.local_rank : -1);
  ProfilingBackend* profiler = nullptr;
  if (profile) {
    auto wrapped = std::make_unique<ProfilingBackend>(std::move(backend));
    profiler = wrapped.get();
    backend = std::move(wrapped);
  }
  backend->set_matmul_dtype(dtype == "bf16" ? DType::bf16 : DType::f32);
  backend->set_tf32(tf32);
  const std::unique_ptr<Comm> world = make_world_comm(*backend, launch);
  TimedComm comm(*world);  // exposed communication: the time the step spends inside the Comm
  std::unique_ptr<ParamStore> store;
  if (shard) store = std::make_unique<ShardedParamStore>(preset.config, *backend, comm, *shard, ShardOptions{.offload = offload});
  else if (comm.size() > 1) store = std::make_unique<ReplicatedParamStore>(preset.config, *backend, comm);
  LlamaModel model(preset.config, *backend, ModelOptions{.recompute = recompute}, std::move(store));
  init_weights(model, 1234);
  backend->reset_peak_memory();  // init holds every unit at once; the peak reported is the training's
  AdamW opt(model, AdamWConfig{0.9f, 0.999f, 1e-8f, 0.0f});
  const std::vector<Batch> micro = {
      random_token_batch(preset.batch, preset.seq_len, int32_t(preset.config.vocab_size), 42 + uint64_t(launch.rank))};
  const Batch& batch = micro.front();
  const double flops_per_token = train_flops(preset.config, batch) / double(batch.num_tokens());
  std::printf("sft bench: preset %s (%.1fM params, %ld layers), dtype %s%s, B=%ld T=%ld, %s%s%s\n",
              preset.name.c_str(), double(model.num_params()) / 1e6, long(preset.config.num_hidden_layers),
              dtype.c_str(), tf32 && dtype == "fp32" ? " (tf32)" : "", long(preset.batch), long(preset.seq_len),
              gpu ? backend->device_description().c_str() : fmt::format("{} threads", omp_get_max_threads()).c_str(),
              recompute ? ", gradient checkpointing" : "",
              offload ? ", --fsdp full_shard offload (weights, gradients, AdamW moments in pinned host memory)" : "");
  const std::string routes = backend->route_report();
  if (!routes.empty()) std::printf("%s%s", routes.c_str(), routes.back() == '\n' ? "" : "\n");
  std::printf("MFU peak: %.0f GFLOP/s (%s)\n", peak_gflops, peak_how.c_str());
  if (comm.size() > 1)
    std::printf("data parallel: %d ranks (%s), %d threads and %ld x %ld tokens each; --fsdp %s\n", comm.size(),
                launch.launcher.c_str(), omp_get_max_threads(), long(preset.batch), long(preset.seq_len),
                shard ? shard_mode_name(*shard) : "no_shard");
  double total_s = 0.0, loss = 0.0;
  for (int s = 0; s < warmup + steps; ++s) {
    if (s == warmup) comm.reset();
    auto t0 = std::chrono::steady_clock::now();
    loss = train_step(model, opt, comm, micro, 1e-4, StepOptions{}).loss;
    backend->synchronize();  // GPU ops are asynchronous: the step ends when they are done
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) total_s += dt;
    if (profiler && s + 1 == warmup) profiler->report_and_reset();  // drop the warmup steps
    std::printf("step %d%s: loss %.4f, %.3f s\n", s, s < warmup ? " (warmup)" : "", loss, dt);
  }
  if (profiler) std::printf("per-op time over %d timed steps:\n%s", steps, profiler->report_and_reset().c_str());
  const double tokens_per_s = double(batch.num_tokens()) * steps / total_s;
  const double gflops = tokens_per_s * flops_per_token / 1e9;
  const double mfu = gflops / peak_gflops;
  const double peak_gpu_mb = double(backend->peak_memory_bytes()) / (1024.0 * 1024.0);
  // every rank's tokens/s, share of the step inside the Comm and peak RSS, in rank order
  const int R = comm.size();
  const double mine[3] = {tokens_per_s, comm.seconds() / total_s, peak_rss_mb()};
  std::vector<double> all(size_t(3 * R));
  world->all_gather_host(mine, 3, all.data(), "bench report");
  double total_tokens_per_s = 0.0, exposed = 0.0;
  for (int r = 0; r < R; ++r) {
    total_tokens_per_s += all[size_t(3 * r)];
    exposed = std::max(exposed, all[size_t(3 * r + 1)]);
  }
  if (R > 1) {
    for (int r = 0; r < R; ++r)
      std::printf("rank %d: tokens/s %.1f | inside collectives %.1f%% of the step | peak RSS %.0f MB\n", r,
                  all[size_t(3 * r)], 100.0 * all[size_t(3 * r + 1)], all[size_t(3 * r + 2)]);
    std::printf("all %d ranks: tokens/s %.1f | exposed communication %.1f%% of the step (the most of any rank)\n", R,
                total_tokens_per_s, 100.0 * exposed);
  }
  std::printf("tokens/s %.1f | %.1f GFLOP/s | MFU %.1f%% of %.0f GFLOP/s peak | peak RSS %.0f MB%s\n", tokens_per_s,
              gflops, 100.0 * mfu, peak_gflops, peak_rss_mb(),
              gpu ? fmt::format(" | peak GPU memory {:.0f} MiB", peak_gpu_mb).c_str() : "");
  if (json) {
    nlohmann::json j = {{"preset", preset.name}, {"dtype", dtype},     {"tokens_per_s", tokens_per_s},
                        {"gflops", gflops},      {"mfu", mfu},         {"peak_rss_mb", peak_rss_mb()},
                        {"impl", "sft"},         {"threads", omp_get_max_threads()},
                        {"gradient_checkpointing", recompute}, {"peak_gflops", peak_gflops},
                        {"peak_how", peak_how},  {"num_layers", preset.config.num_hidden_layers},
                        {"offload", offload}};
    if (R > 1) {
      j["world_size"] = R;
      j["fsdp"] = shard ? shard_mode_name(*shard) : "no_shard";
      j["total_tokens_per_s"] = total_tokens_per_s;
      j["exposed_comm"] = exposed;
      std::vector<double> rss;
      for (int r = 0; r < R; ++r) rss.push_back(all[size_t(3 * r + 2)]);
      j["peak_rss_mb_per_rank"] = rss;
    }
    if (gpu) {
      j["device"] = "cuda";
      j["gpu"] = backend->device_description();
      j["peak_gpu_mb"] = peak_gpu_mb;
      j["batch"] = preset.batch;
      j["seq_len"] = preset.seq_len;
      j["tf32"] = tf32;
    }
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace sft
