// Non-owning tensor view: pointer, dtype, shape (up to 4 dims, row-major, contiguous), device.
// No autograd and no ownership: buffers are owned by the model / trainer through a Backend.
#pragma once
#include <array>
#include <cstdint>
#include <fmt/format.h>
#include <initializer_list>
#include <string>

#include "core/check.h"
#include "core/dtype.h"

namespace sft {

enum class Device : uint8_t { cpu, cuda };

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int ndim = 0;
  std::array<int64_t, 4> shape{};

  Tensor() = default;
  Tensor(void* d, DType dt, std::initializer_list<int64_t> dims, Device dev = Device::cpu)
      : data(d), dtype(dt), device(dev), ndim(int(dims.size())) {
    SFT_ASSERT(dims.size() <= 4);
    int i = 0;
    for (int64_t x : dims) shape[i++] = x;
  }

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  bool empty() const { return data == nullptr; }

  float* f32() const {
    SFT_ASSERT(dtype == DType::f32);
    return static_cast<float*>(data);
  }
  uint16_t* bf16() const {
    SFT_ASSERT(dtype == DType::bf16);
    return static_cast<uint16_t*>(data);
  }
  std::string shape_str() const {
    std::string s = "(";
    for (int i = 0; i < ndim; ++i) s += fmt::format("{}{}", i ? ", " : "", shape[i]);
    return s + (ndim == 1 ? ",)" : ")");
  }
};

}  // namespace sft
