// A data file tokenized in parts by several processes (the ranks of a job) and joined: which
// samples make each part (contiguous, about equal JSON bytes), and the join that gives every
// process exactly the Dataset one process builds from the whole file (the same tokens, labels,
// sample order, issues and counts). The bytes travel through a PartExchange, which the caller
// implements over its transport (dist/shared_dataset.h: the ranks' Comm).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "data/dataset.h"

namespace sft {

// Moves bytes between the processes that built the parts; every process calls the same sequence.
class PartExchange {
 public:
  virtual ~PartExchange() = default;
  virtual int part() const = 0;   // this process's part
  virtual int parts() const = 0;  // how many
  // Every part's `mine`, concatenated in part order into `out` (its size: the sum of the parts'
  // sizes, which `sizes` returns first). `what` names the exchange in errors.
  virtual std::vector<int64_t> sizes(int64_t mine, const char* what) = 0;
  virtual void concat(std::span<const std::byte> mine, std::span<const int64_t> sizes, std::span<std::byte> out,
                      const char* what) = 0;

  // Every part's elements, concatenated in part order.
  template <class T>
  std::vector<T> concat(std::span<const T> mine, const char* what) {
    const std::vector<int64_t> bytes = sizes(static_cast<int64_t>(mine.size_bytes()), what);
    int64_t total = 0;
    for (int64_t b : bytes) total += b;
    std::vector<T> out(static_cast<size_t>(total) / sizeof(T));
    concat(std::as_bytes(mine), bytes, std::as_writable_bytes(std::span<T>(out)), what);
    return out;
  }
};

// Samples [begin, end) of part `part` of `parts`: contiguous, split where the JSON bytes before a
// sample reach part/parts of the total, so parts take about equal tokenization time. The parts
// cover the file in order; a part may be empty (more parts than samples).
std::pair<int64_t, int64_t> sample_part_range(const SampleFile& file, int part, int parts);

// The whole file's Dataset from this process's part (load_dataset with DataOptions::part) and the
// other parts, through `ex`: arrays concatenated in part order, issues in file order, counts
// summed (longest: the maximum), parts' DataPartInfo listed. Frees each of the part's arrays as
// soon as it is sent, so the peak is the whole plus the part.
Dataset join_dataset_parts(Dataset part, PartExchange& ex);

}  // namespace sft
