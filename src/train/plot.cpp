// SVG plot of the loss curves and the learning rate: two panels sharing the step axis, with
// min/max tick labels; non-finite values are left out of the curves.
#include "train/plot.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/file_util.h"

namespace sft {

namespace {

constexpr double kWidth = 720, kPanel = 220, kLeft = 70, kRight = 20, kTop = 40, kGap = 50;

struct Range {
  double lo = INFINITY, hi = -INFINITY;
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool valid() const { return lo <= hi; }
  double norm(double v) const { return hi > lo ? (v - lo) / (hi - lo) : 0.5; }
};

std::string polyline(const std::vector<PlotPoint>& pts, const Range& xs, const Range& ys, double y0,
                     const char* color, const char* extra = "") {
  std::string points;
  for (const PlotPoint& p : pts) {
    if (!std::isfinite(p.value)) continue;
    const double x = kLeft + xs.norm(double(p.step)) * (kWidth - kLeft - kRight);
    const double y = y0 + (1.0 - ys.norm(p.value)) * kPanel;
    points += fmt::format("{:.1f},{:.1f} ", x, y);
  }
  if (points.empty()) return "";
  return fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" {} points=\"{}\"/>\n", color, extra,
                     points);
}

std::string panel(const char* label, const Range& ys, double y0) {
  std::string s = fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\n",
                              kLeft, y0, kWidth - kLeft - kRight, kPanel);
  s += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>\n", kLeft, y0 - 6, label);
  if (ys.valid()) {
    s += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{:.4g}</text>\n", kLeft - 4,
                     y0 + 10, ys.hi);
    s += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{:.4g}</text>\n", kLeft - 4,
                     y0 + kPanel, ys.lo);
  }
  return s;
}

std::string escape(const std::string& t) {
  std::string out;
  for (char c : t) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

}  // namespace

std::string render_loss_plot_svg(const PlotSeries& s, const std::string& title) {
  Range xs, loss, lr;
  for (auto* v : {&s.train_loss, &s.eval_loss})
    for (const PlotPoint& p : *v) {
      xs.add(double(p.step));
      loss.add(p.value);
    }
  for (const PlotPoint& p : s.learning_rate) {
    xs.add(double(p.step));
    lr.add(p.value);
  }
  const double height = kTop + 2 * kPanel + kGap + 40;
  const double y_loss = kTop, y_lr = kTop + kPanel + kGap;
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"20\" font-size=\"14\">{}</text>\n",
      kWidth, height, kWidth, height, kLeft, escape(title));
  svg += panel("loss (train: blue, eval: orange)", loss, y_loss);
  svg += panel("learning rate", lr, y_lr);
  svg += polyline(s.train_loss, xs, loss, y_loss, "#1f77b4", "class=\"train_loss\"");
  svg += polyline(s.eval_loss, xs, loss, y_loss, "#ff7f0e", "class=\"eval_loss\" stroke-dasharray=\"4 2\"");
  svg += polyline(s.learning_rate, xs, lr, y_lr, "#2ca02c", "class=\"learning_rate\"");
  if (xs.valid()) {
    const double y = y_lr + kPanel + 16;
    svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\">step {:.0f}</text>\n", kLeft, y, xs.lo);
    svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">step {:.0f}</text>\n",
                       kWidth - kRight, y, xs.hi);
  }
  return svg + "</svg>\n";
}

void write_loss_plot(const std::string& path, const PlotSeries& s, const std::string& title) {
  write_file_atomic(path, render_loss_plot_svg(s, title));
}

}  // namespace sft
