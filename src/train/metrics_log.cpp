// metrics.jsonl and the console progress line.
#include "train/metrics_log.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/check.h"
#include "core/file_util.h"

namespace sft {

nlohmann::json TrainMetrics::to_json() const {
  return {{"step", step},   {"epoch", epoch},         {"loss", loss},         {"lr", lr},
          {"grad_norm", grad_norm}, {"tokens", tokens}, {"tokens_per_s", tokens_per_s}, {"mfu", mfu}};
}

MetricsJsonl::MetricsJsonl(const std::string& path, int64_t keep_through_step) : path_(path) {
  if (std::filesystem::exists(path)) {
    const std::string text = read_text_file(path, "metrics");
    std::string kept;
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t end = text.find('\n', pos);
      if (end == std::string::npos) break;  // a torn last line (the run was killed mid-write)
      const std::string_view line(text.data() + pos, end - pos);
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
          j["step"].get<int64_t>() <= keep_through_step)
        kept.append(line).push_back('\n');
      pos = end + 1;
    }
    if (kept.size() != text.size()) write_file_atomic(path, kept);
  }
  file_ = std::fopen(path.c_str(), "a");
  SFT_CHECK(file_ != nullptr, "metrics", "cannot open {}: {}", path, std::strerror(errno));
}

MetricsJsonl::~MetricsJsonl() {
  if (file_) std::fclose(file_);
}

void MetricsJsonl::write(const nlohmann::json& line) {
  // NaN/Inf are not JSON: write them as null (a skipped bad step still gets its line).
  const std::string s = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  SFT_CHECK(std::fwrite(s.data(), 1, s.size(), file_) == s.size() && std::fflush(file_) == 0, "metrics",
            "write to {} failed: {}", path_, std::strerror(errno));
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

std::string format_progress(const TrainMetrics& m) {
  std::string s = fmt::format("step {}/{} | epoch {:.2f} | loss {:.4f} | lr {:.2e} | grad {:.3f} | {:.0f} tok/s",
                              m.step, m.total_steps, m.epoch, m.loss, m.lr, m.grad_norm, m.tokens_per_s);
  if (m.mfu > 0) s += fmt::format(" | MFU {:.1f}%", 100.0 * m.mfu);
  s += " | ETA " + format_duration(m.eta_s);
  return s;
}

ConsoleProgress::ConsoleProgress(std::FILE* out) : out_(out), tty_(isatty(fileno(out)) != 0) {}

void ConsoleProgress::update(const TrainMetrics& m) {
  const std::string line = format_progress(m);
  if (tty_) {
    std::fprintf(out_, "\r\033[2K%s", line.c_str());
    pending_ = true;
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void ConsoleProgress::println(const std::string& line) {
  if (pending_) std::fprintf(out_, "\r\033[2K");
  std::fprintf(out_, "%s\n", line.c_str());
  pending_ = false;
  std::fflush(out_);
}

void ConsoleProgress::finish() {
  if (pending_) std::fprintf(out_, "\n");
  pending_ = false;
  std::fflush(out_);
}

}  // namespace sft
