// TensorBoard event writer: protobuf wire encoding of Event{wall_time=1, step=2, file_version=3,
// summary=5, session_log=7}, Summary{value=1}, Value{tag=1, simple_value=2}, SessionLog{status=1}
// (tensorboard/compat/proto/event.proto, summary.proto), framed as TFRecords.
#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/check.h"

namespace sft {

namespace {

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

// Protobuf wire helpers (little-endian fixed fields, base-128 varints).
void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  s.push_back(char(v));
}
template <typename T>
void put_fixed(std::string& s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  s.append(b, sizeof(T));
}
void put_bytes(std::string& s, uint8_t tag, std::string_view bytes) {
  s.push_back(char(tag));
  put_varint(s, bytes.size());
  s.append(bytes);
}

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string event_header(int64_t step) {
  std::string e;
  e.push_back(0x09);  // wall_time, fixed64
  put_fixed(e, wall_time());
  e.push_back(0x10);  // step, varint
  put_varint(e, uint64_t(step));
  return e;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& log_dir, int64_t start_step) {
  static std::atomic<int> counter{0};
  std::error_code ec;
  std::filesystem::create_directories(log_dir, ec);
  SFT_CHECK(!ec, "tensorboard", "cannot create {}: {}", log_dir, ec.message());
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  path_ = fmt::format("{}/events.out.tfevents.{:010d}.{}.{}.{}", log_dir, int64_t(wall_time()), host,
                      int(getpid()), counter++);
  file_ = std::fopen(path_.c_str(), "wb");
  SFT_CHECK(file_ != nullptr, "tensorboard", "cannot create {}: {}", path_, std::strerror(errno));
  std::string version = event_header(start_step);
  put_bytes(version, 0x1A, "brain.Event:2");  // file_version
  write_record(version);
  std::string start = event_header(start_step);
  std::string session_log;
  session_log.push_back(0x08);  // status = START
  put_varint(session_log, 1);
  put_bytes(start, 0x3A, session_log);
  write_record(start);
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::add_scalar(std::string_view tag, double value, int64_t step) {
  std::string v;
  put_bytes(v, 0x0A, tag);  // Value.tag
  v.push_back(0x15);        // Value.simple_value, fixed32 float
  put_fixed(v, float(value));
  std::string summary;
  put_bytes(summary, 0x0A, v);  // Summary.value
  std::string e = event_header(step);
  put_bytes(e, 0x2A, summary);  // Event.summary
  write_record(e);
}

void TensorBoardWriter::write_record(const std::string& data) {
  std::string rec;
  const uint64_t len = data.size();
  put_fixed(rec, len);
  put_fixed(rec, masked_crc32c(&len, 8));
  rec += data;
  put_fixed(rec, masked_crc32c(data.data(), data.size()));
  SFT_CHECK(std::fwrite(rec.data(), 1, rec.size(), file_) == rec.size(), "tensorboard", "write to {} failed: {}",
            path_, std::strerror(errno));
}

void TensorBoardWriter::flush() { std::fflush(file_); }

}  // namespace sft
