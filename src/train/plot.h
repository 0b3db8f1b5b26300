// The SVG training plot in output_dir: train and eval loss over steps (top) and the learning rate
// (bottom), self-contained (no scripts, no fonts beyond the viewer's default), rewritten atomically.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sft {

struct PlotPoint {
  int64_t step;
  double value;
};

struct PlotSeries {
  std::vector<PlotPoint> train_loss, eval_loss, learning_rate;
};

std::string render_loss_plot_svg(const PlotSeries& s, const std::string& title);
void write_loss_plot(const std::string& path, const PlotSeries& s, const std::string& title);

}  // namespace sft
