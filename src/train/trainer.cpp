// The training loop: for each optimizer step, the micro-batches from the stream, train_step(),
// then log, evaluate, checkpoint and stop as configured; the final checkpoint and HF directory.
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>

#include <fmt/format.h>

#include "core/file_util.h"
#include "dist/sharded_checkpoint.h"
#include "dist/step_collectives.h"
#include "io/checkpoint.h"
#include "io/hf_model.h"
#include "train/interrupt.h"
#include "train/metrics_sink.h"
#include "train/optimizer.h"
#include "train/output_lock.h"
#include "train/resume_choice.h"
#include "train/schedule.h"

namespace sft {

namespace fs = std::filesystem;

EvalResult evaluate(LlamaModel& model, const std::vector<Batch>& batches) {
  const std::unique_ptr<Comm> one = make_local_comm(model.backend());
  return evaluate(model, *one, batches);
}

namespace {

// The final HF model directory in output_dir: weights and config.json (save_hf_model), the
// tokenizer and other files copied from the base model; generation_config.json is the base
// model's when it has one (HF keeps model.generation_config), else written from the config.
void save_final_model(LlamaModel& model, const TrainConfig& cfg, const CheckpointFiles& files) {
  save_hf_model(model, cfg.output_dir, SaveOptions{});
  bool copied_generation_config = false;
  for (const std::string& f : files.extra_files) {
    files.put(f, cfg.output_dir);
    copied_generation_config |= f == "generation_config.json";
  }
  if (!copied_generation_config) write_generation_config(model.config(), cfg.output_dir);
  verify_saved_model_files(cfg.output_dir, files.extra_files);  // read back from the storage, compared
}

}  // namespace

TrainResult train(const TrainConfig& cfg, LlamaModel& model, TrainerInputs in, Comm* comm_in) {
  SFT_CHECK(in.train != nullptr, "train", "no training data");
  SFT_CHECK(cfg.gradient_accumulation_steps >= 1, "train", "--gradient_accumulation_steps must be >= 1, got {}",
            cfg.gradient_accumulation_steps);
  std::unique_ptr<Comm> own_comm;
  if (!comm_in) own_comm = make_local_comm(model.backend());
  Comm& comm = comm_in ? *comm_in : *own_comm;
  fs::create_directories(cfg.output_dir);
  const OutputDirLock output_lock(cfg.output_dir, comm.rank() == 0);  // one writer per output_dir
  const int64_t accum = cfg.gradient_accumulation_steps;
  const int64_t per_epoch = std::max<int64_t>(1, (in.train->batches_per_epoch() + accum - 1) / accum);
  const int64_t total = cfg.max_steps > 0 ? cfg.max_steps
                                          : std::max<int64_t>(1, int64_t(std::ceil(cfg.num_train_epochs * double(per_epoch))));
  const LrSchedule schedule{cfg.lr_scheduler_type, cfg.learning_rate,
                            warmup_steps_for(total, cfg.warmup_steps, cfg.warmup_ratio), total};
  AdamW opt(model, AdamWConfig{float(cfg.adam_beta1), float(cfg.adam_beta2), float(cfg.adam_epsilon),
                               float(cfg.weight_decay)});
  const StepOptions step_opt{.loss_normalization = cfg.loss_normalization, .max_grad_norm = cfg.max_grad_norm,
                             .reduce_dtype = reduce_dtype_from_name(cfg.fsdp_reduce_dtype)};
  const int64_t eval_every = cfg.eval_steps > 0 ? cfg.eval_steps : cfg.logging_steps;
  const bool has_eval = in.eval && !in.eval->empty() && cfg.evaluation_strategy != IntervalStrategy::no;

  int64_t start_step = 0, tokens_seen = 0;
  nlohmann::json resumed_history = nlohmann::json::array();
  // Verified before loading (rank 0), the same on every rank; auto-resume falls back past damaged ones.
  in.resume_dir = agree_on_resume_checkpoint(comm, in.resume_dir, !cfg.resume_from_checkpoint.empty());
  if (!in.resume_dir.empty()) {
    OptimizerState st = opt.state();
    nlohmann::json state = load_checkpoint(in.resume_dir, model, st);  // each rank reads its slices
    opt.set_steps_taken(st.steps);
    const std::string state_file = (fs::path(in.resume_dir) / "trainer_state.json").string();
    SFT_CHECK(state.is_object() && state.contains("global_step") && state["global_step"].is_number_integer() &&
                  state.contains("data") && (!state.contains("tokens_seen") || state["tokens_seen"].is_number_integer()),
              "checkpoint", "{}: expected an object with an integer 'global_step' (and 'tokens_seen') and the "
              "data loader's 'data'", state_file);
    start_step = state["global_step"].get<int64_t>();
    tokens_seen = state.value("tokens_seen", int64_t(0));
    in.train->restore(state["data"]);
    resumed_history = state.value("log_history", nlohmann::json::array());
  }
  const bool tensorboard = cfg.report_to != ReportTo::none;  // wandb and all: TensorBoard events
  const bool writer = comm.rank() == 0;  // one rank writes logs, checkpoints and the final model
  MetricsSink sink(cfg.output_dir, tensorboard, start_step, writer);
  sink.restore_history(resumed_history);
  if (!in.resume_dir.empty()) sink.message(fmt::format("resumed from {} at step {}", in.resume_dir, start_step));

  auto trainer_state = [&](int64_t step) {
    return nlohmann::json{{"global_step", step},           {"epoch", in.train->epoch()},
                          {"max_steps", total},            {"tokens_seen", tokens_seen},
                          {"data", in.train->state()},     {"rng", {{"seed", cfg.seed}}},
                          {"log_history", sink.history()}, {"logging_steps", cfg.logging_steps},
                          {"train_batch_size", cfg.per_device_train_batch_size}};
  };
  int64_t last_saved = -1;
  RotationMemory rotation;  // --save_total_limit counts checkpoints that verify, each hashed once per run
  // Rank 0 writes the model (a sharded store's other ranks feed it unit by unit), each rank of a
  // sharded store its optimizer shard; rank 0 completes the checkpoint and the others wait for it.
  auto save = [&](int64_t step) {
    last_saved = step;
    const std::string dir = save_checkpoint_any(cfg.output_dir, step, model, comm, opt.state(),
                                                writer ? trainer_state(step) : nlohmann::json(), in.files);
    if (writer) {
      const RotationReport rotated = rotate_checkpoints(cfg.output_dir, cfg.save_total_limit, dir, &rotation);
      sink.write_plot();
      sink.message("saved " + dir);
      for (const std::string& note : rotated.notes) sink.message(note);
    }
    comm.barrier("checkpoint_saved");
  };
  auto run_eval = [&](int64_t step) {
    const EvalResult r = evaluate(model, comm, *in.eval);
    sink.eval({step, in.train->epoch(), r.loss, r.targets});
  };

  TrainResult result;
  int64_t bad_in_a_row = 0;
  double window_loss = 0, window_tokens_in = 0, window_flops = 0, window_seconds = 0;
  int64_t window_steps = 0;
  const PeakInfo peak = default_peak(model.backend().device(), model.backend().matmul_dtype(), cfg.tf32);
  const double peak_gflops = peak.gflops;
  sink.message(fmt::format("MFU peak: {:.0f} GFLOP/s ({})", peak.gflops, peak.how));
  const auto run_start = std::chrono::steady_clock::now();
  for (int64_t step = start_step; step < total; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const double epoch_before = in.train->epoch();
    std::vector<Batch> micro;
    for (int64_t i = 0; i < accum; ++i) micro.push_back(in.train->next());
    const double lr = schedule.lr_at(step);
    const StepResult r = train_step(model, opt, comm, micro, lr, step_opt);
    const int64_t done = step + 1;
    if (r.skipped) {
      ++bad_in_a_row;
      sink.skipped(done, r.skip_reason, r.loss, r.grad_norm, bad_in_a_row);
      SFT_CHECK(bad_in_a_row < cfg.max_bad_steps || r.targets == 0, "train",
                "{} consecutive steps with a non-finite loss or gradient (last: {}); stopping. The last good "
                "checkpoint in {} is intact; lower --learning_rate or check the data",
                bad_in_a_row, r.skip_reason, cfg.output_dir);
      continue;
    }
    bad_in_a_row = 0;
    tokens_seen += r.targets;
    result.step_losses.push_back(r.loss);
    result.final_loss = r.loss;
    result.steps = done;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    window_loss += r.loss;
    window_tokens_in += double(r.tokens);
    window_flops += r.flops;
    window_seconds += dt;
    ++window_steps;

    if (done % cfg.logging_steps == 0 || done == total) {
      TrainMetrics m;
      m.step = done;
      m.total_steps = total;
      m.epoch = in.train->epoch();
      m.loss = window_loss / double(window_steps);
      m.lr = lr;
      m.grad_norm = r.grad_norm;
      m.tokens = tokens_seen;
      m.tokens_per_s = window_tokens_in / window_seconds;
      m.mfu = window_flops / window_seconds / 1e9 / peak_gflops;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
      m.eta_s = elapsed / double(done - start_step) * double(total - done);
      sink.train(m);
      result.last_logged_loss = m.loss;
      result.last_logged_step = done;
      window_loss = window_tokens_in = window_flops = window_seconds = 0;
      window_steps = 0;
    }
    const bool epoch_end = std::floor(in.train->epoch()) > std::floor(epoch_before);
    if (has_eval && ((cfg.evaluation_strategy == IntervalStrategy::steps && done % eval_every == 0) ||
                     (cfg.evaluation_strategy == IntervalStrategy::epoch && epoch_end)))
      run_eval(done);
    if ((cfg.save_strategy == IntervalStrategy::steps && done % cfg.save_steps == 0 && done != total) ||
        (cfg.save_strategy == IntervalStrategy::epoch && epoch_end && done != total))
      save(done);
    // SIGINT/SIGTERM: the step is complete, so save it and stop; the same command resumes exactly.
    // Every rank takes the decision together (one may have seen the signal first).
    const int stop = cfg.save_on_interrupt ? agree_to_stop(comm, interrupt_signal()) : 0;
    if (stop != 0 && done != total) {
      sink.finish_progress();
      if (last_saved != done) save(done);
      result.interrupted_by = stop;
      result.final_dir = (fs::path(cfg.output_dir) / fmt::format("checkpoint-{}", done)).string();
      return result;
    }
  }
  sink.finish_progress();
  if (has_eval && !sink.has_eval_at(total)) run_eval(total);
  // The final checkpoint (for resume) and the final HF model directory in output_dir.
  if (cfg.save_strategy != IntervalStrategy::no && start_step < total) save(total);
  write_on_rank0(model, comm, [&] {
    save_final_model(model, cfg, in.files);
    write_file_atomic((fs::path(cfg.output_dir) / "trainer_state.json").string(), trainer_state(total).dump(2));
    sink.write_plot();
  });
  comm.barrier("final_model_saved");
  result.final_dir = cfg.output_dir;
  return result;
}

}  // namespace sft
