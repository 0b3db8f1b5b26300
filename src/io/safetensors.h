// safetensors read (mmap, fully validated) and write (atomic), following huggingface/safetensors
// (README "Format", src/tensor.rs): 8-byte LE header length, JSON header, contiguous byte buffer.
// The reader rejects every file the reference reader rejects (ecosystem.md §1.2), plus headers
// with leading whitespace, with one-line "[safetensors] FILE: ..." errors; the writer produces the
// reference writer's layout. The file and JSON helpers it uses live in core/file_util.h (included
// here, so users of parse_json_strict / read_text_file / write_file_atomic through it still build).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/file_util.h"
#include "core/tensor.h"

namespace sft {

// One tensor of an opened file. data points into the mapping (valid while the file is open) and
// may be unaligned; dtype is the safetensors string ("F32", "BF16", "F16", "I32", "I64", ...).
struct SafetensorsTensorInfo {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the byte buffer
  const uint8_t* data = nullptr;

  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
  std::string shape_str() const;  // "(4096, 11008)", "(4096,)", "()"
};

// A read-only memory-mapped safetensors file (RAII). The constructor validates everything and
// throws sft::Error naming the file (and the tensor) on the first violation. Every dtype of the
// format is accepted for validation; callers check dtype before using data.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  // Tensors in data-offset order (the order of the bytes in the file).
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const SafetensorsTensorInfo* find(std::string_view name) const;  // nullptr when absent
  const SafetensorsTensorInfo& at(std::string_view name) const;    // Error when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Unmap {
    size_t size;
    void operator()(void* p) const;
  };
  void parse(const uint8_t* bytes, uint64_t file_size);

  std::string path_;
  std::unique_ptr<void, Unmap> map_{nullptr, Unmap{0}};
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// The DType for "F32" / "BF16" / "F16"; nullopt for any other string.
std::optional<DType> safetensors_float_dtype(std::string_view dtype);
// Bytes per element of a dtype the writer supports (F32, BF16, F16, I32, I64), else 0.
size_t safetensors_dtype_size(std::string_view dtype);
// Bytes a tensor of this shape takes as dtype (one of the writer's dtypes).
uint64_t safetensors_nbytes(std::string_view dtype, const std::vector<int64_t>& shape);

// One tensor to write: host memory, contiguous, row-major.
struct SafetensorsWriteItem {
  std::string name;
  const void* data = nullptr;
  std::string dtype;  // dtype of data: "F32" | "BF16" | "F16" | "I32" | "I64"
  std::vector<int64_t> shape;

  static SafetensorsWriteItem from_tensor(std::string name, const Tensor& t);
};

// Writes path atomically (path + ".tmp", fsync, rename, fsync of the directory). The header has
// __metadata__ first ({"format":"pt"} plus `metadata`), tensors ordered as the reference writer
// does (dtype rank descending, then name), and is space-padded to a multiple of 8 bytes. With
// float_dtype set, every F32/BF16/F16 tensor is converted to it on the way out.
void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteItem>& tensors,
                       const std::map<std::string, std::string>& metadata = {},
                       std::optional<DType> float_dtype = std::nullopt);

// write_safetensors with each tensor's bytes asked for when the writer reaches it, in the file's
// order (so a caller can stage one tensor, or one parameter unit, at a time): the items' data
// fields are ignored and fetch(i) returns the host data of tensors[i] (dtype and shape as the
// item says), valid until the next call. The file is byte for byte what write_safetensors writes.
void write_safetensors_streamed(const std::string& path, const std::vector<SafetensorsWriteItem>& tensors,
                                const std::function<const void*(size_t index)>& fetch,
                                const std::map<std::string, std::string>& metadata = {},
                                std::optional<DType> float_dtype = std::nullopt);

}  // namespace sft
