// load_dataset_across_ranks: each rank's part, then the agreement on errors, then the join, over
// Comm::all_gather_host. Bytes ride in doubles as 48-bit integers (6 bytes a double, exact on any
// transport of doubles), in rounds of at most kRoundWords doubles per rank, each rank's bytes
// padded to the longest part's in its round; so the extra memory is one round's buffers.
#include "dist/shared_dataset.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <optional>

#include "core/check.h"
#include "data/dataset_parts.h"

namespace sft {

namespace {

constexpr int64_t kBytesPerWord = 6;
constexpr int64_t kRoundWords = int64_t(1) << 20;  // per rank and round: 6 MiB of data in 8 MiB of doubles

// Bytes [at, at + 6) of `bytes` (zeros past its end) as the integer they spell, little-endian.
double pack(std::span<const std::byte> bytes, int64_t at) {
  uint64_t word = 0;
  const int64_t end = std::min<int64_t>(at + kBytesPerWord, static_cast<int64_t>(bytes.size()));
  for (int64_t b = end - 1; b >= at; --b) word = (word << 8) | std::to_integer<uint64_t>(bytes[size_t(b)]);
  return static_cast<double>(word);
}

// The bytes `pack` made of `word`, written at `at` in `out` (those past its end dropped).
void unpack(double word, std::span<std::byte> out, int64_t at) {
  auto w = static_cast<uint64_t>(word);
  const int64_t end = std::min<int64_t>(at + kBytesPerWord, static_cast<int64_t>(out.size()));
  for (int64_t b = at; b < end; ++b, w >>= 8) out[size_t(b)] = std::byte(uint8_t(w & 0xff));
}

class CommExchange final : public PartExchange {
 public:
  explicit CommExchange(Comm& comm) : comm_(comm) {}
  int part() const override { return comm_.rank(); }
  int parts() const override { return comm_.size(); }
  using PartExchange::concat;

  std::vector<int64_t> sizes(int64_t mine, const char* what) override {
    const double v = static_cast<double>(mine);  // exact below 2^53
    std::vector<double> all(static_cast<size_t>(comm_.size()));
    comm_.all_gather_host(&v, 1, all.data(), what);
    return std::vector<int64_t>(all.begin(), all.end());
  }

  void concat(std::span<const std::byte> mine, std::span<const int64_t> sizes, std::span<std::byte> out,
              const char* what) override {
    const int n = comm_.size();
    SFT_CHECK(static_cast<int64_t>(mine.size()) == sizes[size_t(comm_.rank())], "comm",
              "{}: this rank sends {} bytes but announced {}", what, mine.size(), sizes[size_t(comm_.rank())]);
    std::vector<int64_t> start(size_t(n) + 1, 0);
    for (int q = 0; q < n; ++q) start[size_t(q) + 1] = start[size_t(q)] + sizes[size_t(q)];
    SFT_CHECK(start.back() == static_cast<int64_t>(out.size()), "comm", "{}: {} bytes in all, room for {}", what,
              start.back(), out.size());
    const int64_t longest = *std::max_element(sizes.begin(), sizes.end());
    const int64_t words = (longest + kBytesPerWord - 1) / kBytesPerWord;
    std::vector<double> send, recv;
    for (int64_t w0 = 0; w0 < words; w0 += kRoundWords) {
      const int64_t m = std::min(kRoundWords, words - w0);
      send.resize(size_t(m));
      for (int64_t k = 0; k < m; ++k) send[size_t(k)] = pack(mine, (w0 + k) * kBytesPerWord);
      recv.resize(size_t(m) * size_t(n));
      comm_.all_gather_host(send.data(), int(m), recv.data(), what);
      for (int q = 0; q < n; ++q) {
        const std::span<std::byte> dst = out.subspan(size_t(start[size_t(q)]), size_t(sizes[size_t(q)]));
        for (int64_t k = 0; k < m && (w0 + k) * kBytesPerWord < sizes[size_t(q)]; ++k)
          unpack(recv[size_t(q) * size_t(m) + size_t(k)], dst, (w0 + k) * kBytesPerWord);
      }
    }
  }

 private:
  Comm& comm_;
};

}  // namespace

Dataset load_dataset_across_ranks(Comm& comm, const std::string& path, const Tokenizer& tok, const DataOptions& opt) {
  if (comm.size() == 1) return load_dataset(path, tok, opt);
  DataOptions mine = opt;
  mine.part = comm.rank();
  mine.parts = comm.size();
  std::optional<Dataset> part;
  std::string error;
  try {
    part = load_dataset(path, tok, mine);
  } catch (const std::exception& e) {  // agreed on below, then thrown on every rank
    error = e.what();
    if (error.empty()) error = fmt::format("[data] {}: loading failed on rank {}", path, comm.rank());
  }
  CommExchange ex(comm);
  const std::vector<int64_t> error_sizes = ex.sizes(static_cast<int64_t>(error.size()), "data part errors");
  const auto failed = std::find_if(error_sizes.begin(), error_sizes.end(), [](int64_t b) { return b > 0; });
  if (failed != error_sizes.end()) {
    const std::vector<char> all = ex.concat(std::span<const char>(error.data(), error.size()), "data part errors");
    int64_t at = 0;
    for (auto it = error_sizes.begin(); it != failed; ++it) at += *it;
    throw Error(std::string(all.begin() + at, all.begin() + at + *failed));
  }
  return join_dataset_parts(std::move(*part), ex);
}

}  // namespace sft
