// TensorBoard event files without TensorFlow: TFRecord framing (length, masked CRC-32C, data,
// masked CRC-32C) around hand-encoded Event protos with scalar summaries (ecosystem.md §3).
// One file per process start; a SessionLog START marks a fresh run or a resume so TensorBoard
// purges points of a crashed segment past the resume step.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace sft {

uint32_t crc32c(const void* data, size_t n);  // Castagnoli, as TFRecord uses
uint32_t masked_crc32c(const void* data, size_t n);

class TensorBoardWriter {
 public:
  // Creates log_dir and events.out.tfevents.<time>.<host>.<pid>.<counter> in it; start_step is
  // the step of the SessionLog START (0 for a fresh run, the resumed step otherwise).
  TensorBoardWriter(const std::string& log_dir, int64_t start_step);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalar(std::string_view tag, double value, int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace sft
