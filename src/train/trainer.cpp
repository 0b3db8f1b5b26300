// The training loop. One optimizer step: count the step's target tokens, forward+backward each
// micro-batch with its loss scale, check the loss and gradient norm are finite, clip, AdamW at the
// scheduled rate; then log, evaluate and checkpoint as configured.
#include "train/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>

#include <fmt/format.h>

#include "io/hf_model.h"
#include "io/safetensors.h"
#include "train/interrupt.h"
#include "train/metrics_log.h"
#include "train/optimizer.h"
#include "train/plot.h"
#include "train/schedule.h"
#include "train/tensorboard.h"

namespace sft {

namespace fs = std::filesystem;

EvalResult evaluate(LlamaModel& model, const std::vector<Batch>& batches) {
  double loss = 0;
  int64_t targets = 0;
  for (const Batch& b : batches) {
    const int64_t n = b.num_targets();
    if (n == 0) continue;
    loss += model.forward(b);
    targets += n;
  }
  return {targets ? loss / double(targets) : NAN, targets};
}

namespace {

double flops_per_token(LlamaModel& model, int64_t seq_len) {
  const LlamaConfig& c = model.config();
  return 6.0 * double(model.num_matmul_params()) +
         12.0 * double(c.num_hidden_layers) * double(c.hidden_size) * double(seq_len);
}

struct Logs {
  std::unique_ptr<MetricsJsonl> jsonl;
  std::unique_ptr<TensorBoardWriter> tb;
  ConsoleProgress console;
  PlotSeries plot;
  nlohmann::json history = nlohmann::json::array();  // trainer_state.json log_history
};

}  // namespace

TrainResult train(const TrainConfig& cfg, LlamaModel& model, TrainerInputs in) {
  SFT_CHECK(in.train != nullptr, "train", "no training data");
  SFT_CHECK(cfg.gradient_accumulation_steps >= 1, "train", "--gradient_accumulation_steps must be >= 1, got {}",
            cfg.gradient_accumulation_steps);
  fs::create_directories(cfg.output_dir);
  const int64_t accum = cfg.gradient_accumulation_steps;
  const int64_t per_epoch = std::max<int64_t>(1, (in.train->batches_per_epoch() + accum - 1) / accum);
  const int64_t total = cfg.max_steps > 0 ? cfg.max_steps
                                          : std::max<int64_t>(1, int64_t(std::ceil(cfg.num_train_epochs * double(per_epoch))));
  const LrSchedule schedule{parse_schedule_kind(cfg.lr_scheduler_type), cfg.learning_rate,
                            warmup_steps_for(total, cfg.warmup_steps, cfg.warmup_ratio), total};
  AdamW opt(model, AdamWConfig{float(cfg.adam_beta1), float(cfg.adam_beta2), float(cfg.adam_epsilon),
                               float(cfg.weight_decay)});
  const bool global_mean = cfg.loss_normalization == "global_token_mean";
  const int64_t eval_every = cfg.eval_steps > 0 ? cfg.eval_steps : cfg.logging_steps;
  const bool has_eval = in.eval && !in.eval->empty() && cfg.evaluation_strategy != "no";

  Logs logs;
  int64_t start_step = 0, tokens_seen = 0;
  if (!in.resume_dir.empty()) {
    nlohmann::json state = load_checkpoint(in.resume_dir, model, opt);
    start_step = state.at("global_step").get<int64_t>();
    tokens_seen = state.value("tokens_seen", int64_t(0));
    in.train->restore(state.at("data"));
    logs.history = state.value("log_history", nlohmann::json::array());
    for (const auto& h : logs.history) {
      if (h.contains("loss") && h["loss"].is_number()) logs.plot.train_loss.push_back({h["step"], h["loss"]});
      if (h.contains("learning_rate")) logs.plot.learning_rate.push_back({h["step"], h["learning_rate"]});
      if (h.contains("eval_loss")) logs.plot.eval_loss.push_back({h["step"], h["eval_loss"]});
    }
    logs.console.println(fmt::format("resumed from {} at step {}", in.resume_dir, start_step));
  }
  logs.jsonl = std::make_unique<MetricsJsonl>((fs::path(cfg.output_dir) / "metrics.jsonl").string());
  if (cfg.report_to == "tensorboard" || cfg.report_to == "all" || cfg.report_to == "wandb")
    logs.tb = std::make_unique<TensorBoardWriter>((fs::path(cfg.output_dir) / "runs").string(), start_step);

  auto trainer_state = [&](int64_t step) {
    return nlohmann::json{{"global_step", step},           {"epoch", in.train->epoch()},
                          {"max_steps", total},            {"tokens_seen", tokens_seen},
                          {"data", in.train->state()},     {"rng", {{"seed", cfg.seed}}},
                          {"log_history", logs.history},   {"logging_steps", cfg.logging_steps},
                          {"train_batch_size", cfg.per_device_train_batch_size}};
  };
  const std::string plot_path = (fs::path(cfg.output_dir) / "loss.svg").string();
  int64_t last_saved = -1;
  auto save = [&](int64_t step) {
    last_saved = step;
    const std::string dir = save_checkpoint(cfg.output_dir, step, model, opt, trainer_state(step), in.files);
    rotate_checkpoints(cfg.output_dir, cfg.save_total_limit, dir);
    write_loss_plot(plot_path, logs.plot, cfg.output_dir);
    logs.console.println("saved " + dir);
  };
  auto run_eval = [&](int64_t step) {
    const EvalResult r = evaluate(model, *in.eval);
    const nlohmann::json line = {{"step", step}, {"epoch", in.train->epoch()}, {"eval_loss", r.loss},
                                 {"eval_ppl", std::exp(r.loss)}, {"eval_tokens", r.targets}};
    logs.jsonl->write(line);
    logs.history.push_back(line);
    logs.plot.eval_loss.push_back({step, r.loss});
    if (logs.tb) {
      logs.tb->add_scalar("eval/loss", r.loss, step);
      logs.tb->add_scalar("eval/ppl", std::exp(r.loss), step);
      logs.tb->flush();
    }
    logs.console.println(fmt::format("eval step {}: loss {:.4f}, ppl {:.3f} over {} tokens", step, r.loss,
                                     std::exp(r.loss), r.targets));
  };

  TrainResult result;
  int64_t bad_in_a_row = 0;
  double window_loss = 0, window_tokens_in = 0, window_seconds = 0;
  int64_t window_steps = 0;
  const double fpt = flops_per_token(model, cfg.model_max_length);
  const double peak_gflops = default_peak_gflops(model.backend().device(), model.backend().matmul_dtype(), cfg.tf32);
  const auto run_start = std::chrono::steady_clock::now();
  for (int64_t step = start_step; step < total; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const double epoch_before = in.train->epoch();
    std::vector<Batch> micro;
    int64_t step_targets = 0, step_tokens = 0;
    for (int64_t i = 0; i < accum; ++i) {
      micro.push_back(in.train->next());
      step_targets += micro.back().num_targets();
      step_tokens += micro.back().num_tokens();
    }
    model.zero_grad();
    double loss_sum = 0, loss_report = 0;
    for (const Batch& b : micro) {
      const int64_t n = b.num_targets();
      if (n == 0) continue;  // nothing to learn from (all labels masked): contributes no gradient
      const float scale = global_mean ? 1.0f / float(step_targets) : 1.0f / float(n * accum);
      const double s = model.forward_backward(b, scale);
      loss_sum += s;
      loss_report += global_mean ? s / double(step_targets) : s / double(n) / double(accum);
    }
    const double grad_norm = grad_global_norm(model);
    const int64_t done = step + 1;
    if (step_targets == 0 || !std::isfinite(loss_report) || !std::isfinite(grad_norm)) {
      ++bad_in_a_row;
      const std::string why = step_targets == 0 ? "no target tokens" : fmt::format("loss {} grad norm {}", loss_report, grad_norm);
      logs.console.println(fmt::format("step {}: skipped the update ({}); {} bad step(s) in a row", done, why, bad_in_a_row));
      logs.jsonl->write({{"step", done}, {"skipped", true}, {"loss", loss_report}, {"grad_norm", grad_norm}});
      SFT_CHECK(bad_in_a_row < cfg.max_bad_steps || step_targets == 0, "train",
                "{} consecutive steps with a non-finite loss or gradient (last: {}); stopping. The last good "
                "checkpoint in {} is intact; lower --learning_rate or check the data",
                bad_in_a_row, why, cfg.output_dir);
      model.zero_grad();
      continue;
    }
    bad_in_a_row = 0;
    if (cfg.max_grad_norm > 0 && grad_norm > cfg.max_grad_norm)  // torch.nn.utils.clip_grad_norm_
      model.backend().scale(model.grads_flat(), float(cfg.max_grad_norm / (grad_norm + 1e-6)));
    const double lr = schedule.lr_at(step);
    opt.step(float(lr));
    tokens_seen += step_targets;
    result.step_losses.push_back(loss_report);
    result.final_loss = loss_report;
    result.steps = done;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    window_loss += loss_report;
    window_tokens_in += double(step_tokens);
    window_seconds += dt;
    ++window_steps;

    if (done % cfg.logging_steps == 0 || done == total) {
      TrainMetrics m;
      m.step = done;
      m.total_steps = total;
      m.epoch = in.train->epoch();
      m.loss = window_loss / double(window_steps);
      m.lr = lr;
      m.grad_norm = grad_norm;
      m.tokens = tokens_seen;
      m.tokens_per_s = window_tokens_in / window_seconds;
      m.mfu = m.tokens_per_s * fpt / 1e9 / peak_gflops;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
      m.eta_s = elapsed / double(done - start_step) * double(total - done);
      logs.console.update(m);
      logs.jsonl->write(m.to_json());
      nlohmann::json h = {{"step", done}, {"epoch", m.epoch}, {"loss", m.loss}, {"learning_rate", lr},
                          {"grad_norm", grad_norm}};
      logs.history.push_back(h);
      logs.plot.train_loss.push_back({done, m.loss});
      logs.plot.learning_rate.push_back({done, lr});
      if (logs.tb) {
        logs.tb->add_scalar("train/loss", m.loss, done);
        logs.tb->add_scalar("train/learning_rate", lr, done);
        logs.tb->add_scalar("train/grad_norm", grad_norm, done);
        logs.tb->add_scalar("train/tokens_per_s", m.tokens_per_s, done);
        logs.tb->flush();
      }
      window_loss = window_tokens_in = window_seconds = 0;
      window_steps = 0;
    }
    const bool epoch_end = std::floor(in.train->epoch()) > std::floor(epoch_before);
    if (has_eval && ((cfg.evaluation_strategy == "steps" && done % eval_every == 0) ||
                     (cfg.evaluation_strategy == "epoch" && epoch_end)))
      run_eval(done);
    if ((cfg.save_strategy == "steps" && done % cfg.save_steps == 0 && done != total) ||
        (cfg.save_strategy == "epoch" && epoch_end && done != total))
      save(done);
    // SIGINT/SIGTERM: the step is complete, so save it and stop; the same command resumes exactly.
    if (cfg.save_on_interrupt && interrupt_signal() != 0 && done != total) {
      logs.console.finish();
      if (last_saved != done) save(done);
      result.interrupted_by = interrupt_signal();
      result.final_dir = (fs::path(cfg.output_dir) / fmt::format("checkpoint-{}", done)).string();
      return result;
    }
  }
  logs.console.finish();
  if (has_eval && (logs.plot.eval_loss.empty() || logs.plot.eval_loss.back().step != total)) run_eval(total);
  // The final checkpoint (for resume) and the final HF model directory in output_dir.
  if (cfg.save_strategy != "no" && start_step < total) save(total);
  LlamaConfig final_cfg = model.config();
  save_hf_model(model, cfg.output_dir, SaveOptions{});
  nlohmann::json config = llama_config_to_json(final_cfg);
  config["use_cache"] = true;
  write_file_atomic((fs::path(cfg.output_dir) / "config.json").string(), config.dump(2));
  write_generation_config(final_cfg, cfg.output_dir);
  for (const std::string& f : in.files.extra_files)
    fs::copy_file(fs::path(in.files.source_dir) / f, fs::path(cfg.output_dir) / f, fs::copy_options::overwrite_existing);
  write_file_atomic((fs::path(cfg.output_dir) / "trainer_state.json").string(), trainer_state(total).dump(2));
  write_loss_plot(plot_path, logs.plot, cfg.output_dir);
  result.final_dir = cfg.output_dir;
  return result;
}

}  // namespace sft
