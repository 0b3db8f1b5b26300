// TensorBoard event files read back with TensorBoard's own loader (tools/read_tensorboard.py in
// the test virtualenv, which checks both CRCs of every record): the header, the SessionLog START
// and every scalar with its step. A flipped byte must stop the reader (the CRC is really checked).
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/tensorboard.h"

namespace sft {

namespace {

std::vector<nlohmann::json> read_events(const std::string& path) {
  const std::string root = SFT_SOURCE_DIR;
  FILE* p = popen((root + "/.venv/bin/python " + root + "/tools/read_tensorboard.py " + path + " 2>/dev/null").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  pclose(p);
  std::vector<nlohmann::json> events;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) events.push_back(nlohmann::json::parse(line));
  return events;
}

}  // namespace

TEST(Crc32c, CheckValue) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the standard CRC-32C check value
}

TEST(TensorBoard, ReadBackWithTensorBoard) {
  if (!std::filesystem::exists(std::string(SFT_SOURCE_DIR) + "/.venv/bin/python"))
    GTEST_SKIP() << "no test virtualenv: run scripts/setup_venv.sh";
  const auto dir = std::filesystem::temp_directory_path() / ("sft_tb_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::string path;
  {
    TensorBoardWriter w(dir.string(), 0);
    for (int step = 1; step <= 5; ++step) {
      w.add_scalar("train/loss", 10.0 / step, step);
      w.add_scalar("train/learning_rate", 2e-5 * step, step);
    }
    w.add_scalar("eval/loss", 1.25, 5);
    path = w.path();
  }
  auto events = read_events(path);
  ASSERT_EQ(events.size(), 2u + 11u);
  EXPECT_EQ(events[0]["file_version"], "brain.Event:2");
  EXPECT_EQ(events[1]["session_log"], 1);  // START
  EXPECT_EQ(events[2]["step"], 1);
  EXPECT_FLOAT_EQ(events[2]["scalars"]["train/loss"].get<float>(), 10.0f);
  EXPECT_EQ(events[11]["step"], 5);
  EXPECT_FLOAT_EQ(events[11]["scalars"]["train/learning_rate"].get<float>(), float(1e-4));
  EXPECT_FLOAT_EQ(events[12]["scalars"]["eval/loss"].get<float>(), 1.25f);

  // A resumed writer is a new file in the same run with a START at the resume step.
  { TensorBoardWriter w(dir.string(), 3); w.add_scalar("train/loss", 7.0, 4); }
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) files += e.path().filename().string().find("tfevents") != std::string::npos;
  EXPECT_EQ(files, 2);

  // Corrupt one byte inside the third record's data: the reader must stop before it.
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  size_t pos = bytes.find("train/loss");
  ASSERT_NE(pos, std::string::npos);
  f.seekp(std::streamoff(pos));
  f.put('X');
  f.close();
  EXPECT_EQ(read_events(path).size(), 2u);
  std::filesystem::remove_all(dir);
}

}  // namespace sft
