// MetricsSink: one report, every sink (see metrics_sink.h).
#include "train/metrics_sink.h"

#include <cmath>
#include <filesystem>

#include <fmt/format.h>

namespace sft {

namespace fs = std::filesystem;

MetricsSink::MetricsSink(const std::string& output_dir, bool tensorboard, int64_t start_step, bool writer)
    : output_dir_(output_dir), writer_(writer) {
  if (!writer_) return;
  jsonl_ = std::make_unique<MetricsJsonl>((fs::path(output_dir) / "metrics.jsonl").string(), start_step);
  if (tensorboard) tb_ = std::make_unique<TensorBoardWriter>((fs::path(output_dir) / "runs").string(), start_step);
}

void MetricsSink::restore_history(const nlohmann::json& history) {
  history_ = history;
  for (const auto& h : history_) {
    if (h.contains("loss") && h["loss"].is_number()) plot_.train_loss.push_back({h["step"], h["loss"]});
    if (h.contains("learning_rate")) plot_.learning_rate.push_back({h["step"], h["learning_rate"]});
    if (h.contains("eval_loss")) plot_.eval_loss.push_back({h["step"], h["eval_loss"]});
  }
}

void MetricsSink::train(const TrainMetrics& m) {
  if (writer_) {
    console_.update(m);
    jsonl_->write(m.to_json());
  }
  history_.push_back({{"step", m.step}, {"epoch", m.epoch}, {"loss", m.loss}, {"learning_rate", m.lr},
                      {"grad_norm", m.grad_norm}});
  plot_.train_loss.push_back({m.step, m.loss});
  plot_.learning_rate.push_back({m.step, m.lr});
  if (tb_) {
    tb_->add_scalar("train/loss", m.loss, m.step);
    tb_->add_scalar("train/learning_rate", m.lr, m.step);
    tb_->add_scalar("train/grad_norm", m.grad_norm, m.step);
    tb_->add_scalar("train/tokens_per_s", m.tokens_per_s, m.step);
    tb_->flush();
  }
}

void MetricsSink::eval(const EvalMetrics& m) {
  const nlohmann::json line = {{"step", m.step}, {"epoch", m.epoch}, {"eval_loss", m.loss},
                               {"eval_ppl", std::exp(m.loss)}, {"eval_tokens", m.targets}};
  if (jsonl_) jsonl_->write(line);
  history_.push_back(line);
  plot_.eval_loss.push_back({m.step, m.loss});
  if (tb_) {
    tb_->add_scalar("eval/loss", m.loss, m.step);
    tb_->add_scalar("eval/ppl", std::exp(m.loss), m.step);
    tb_->flush();
  }
  if (writer_)
    console_.println(fmt::format("eval step {}: loss {:.4f}, ppl {:.3f} over {} tokens", m.step, m.loss,
                                 std::exp(m.loss), m.targets));
}

void MetricsSink::skipped(int64_t step, const std::string& why, double loss, double grad_norm, int64_t bad_in_a_row) {
  if (!writer_) return;
  console_.println(fmt::format("step {}: skipped the update ({}); {} bad step(s) in a row", step, why, bad_in_a_row));
  jsonl_->write({{"step", step}, {"skipped", true}, {"loss", loss}, {"grad_norm", grad_norm}});
}

void MetricsSink::message(const std::string& line) {
  if (writer_) console_.println(line);
}

void MetricsSink::finish_progress() {
  if (writer_) console_.finish();
}

void MetricsSink::write_plot() {
  if (writer_) write_loss_plot((fs::path(output_dir_) / "loss.svg").string(), plot_, output_dir_);
}

}  // namespace sft
