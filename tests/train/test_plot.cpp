// The SVG loss plot: well-formed XML (Python's xml.etree parses it), one point per finite value
// in each curve, NaN values left out, the title escaped.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>

#include "train/plot.h"

namespace sft {

namespace {

int points_of(const std::string& svg, const std::string& cls) {
  std::smatch m;
  if (!std::regex_search(svg, m, std::regex("class=\"" + cls + "\"[^>]*points=\"([^\"]*)\""))) return 0;
  int n = 0;
  for (char c : m[1].str()) n += c == ',';
  return n;
}

}  // namespace

TEST(Plot, CurvesAndWellFormedXml) {
  PlotSeries s;
  for (int i = 1; i <= 50; ++i) {
    s.train_loss.push_back({i, 5.0 / i});
    s.learning_rate.push_back({i, 2e-5 * std::min(1.0, i / 5.0)});
  }
  s.train_loss.push_back({51, NAN});
  s.eval_loss = {{10, 1.0}, {20, 0.8}, {30, 0.7}};
  const std::string svg = render_loss_plot_svg(s, "run <a> & b");
  EXPECT_EQ(points_of(svg, "train_loss"), 50);
  EXPECT_EQ(points_of(svg, "eval_loss"), 3);
  EXPECT_EQ(points_of(svg, "learning_rate"), 50);
  EXPECT_NE(svg.find("run &lt;a&gt; &amp; b"), std::string::npos);

  const auto path = std::filesystem::temp_directory_path() / ("sft_plot_" + std::to_string(::getpid()) + ".svg");
  write_loss_plot(path.string(), s, "run <a> & b");
  const std::string cmd = "python3 -c \"import sys, xml.etree.ElementTree as E; "
                          "r = E.parse(sys.argv[1]).getroot(); assert r.tag.endswith('svg')\" " + path.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  std::filesystem::remove(path);
}

TEST(Plot, EmptySeriesStillRenders) {
  const std::string svg = render_loss_plot_svg({}, "empty");
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(points_of(svg, "train_loss"), 0);
}

}  // namespace sft
