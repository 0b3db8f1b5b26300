// Host access to backend memory for model and I/O code (weight load/save, RoPE tables, loss sums,
// optimizer state): on the CPU backend, or for a tensor in host memory (--fsdp offload's shards),
// the tensor's own memory (zero copy, no extra work); on a GPU backend a host staging buffer moved
// with Backend::copy. Read: construct with load = true.
// Write: fill f32(), then store().
#pragma once
#include <memory>

#include "backend/backend.h"

namespace sft {

class HostTensor {
 public:
  HostTensor(Backend& be, const Tensor& t, bool load) : be_(&be), t_(t) {
    if (be.device() == Device::cpu || t.device == Device::cpu) {  // host memory (e.g. offloaded state)
      host_ = t.data;
      return;
    }
    staging_ = std::make_unique_for_overwrite<unsigned char[]>(t.nbytes());
    host_ = staging_.get();
    if (load) be.copy(host_, t.data, t.nbytes());
  }
  float* f32() const {
    SFT_ASSERT(t_.dtype == DType::f32);
    return static_cast<float*>(host_);
  }
  // The same tensor over the host memory (for writers that take host tensors).
  Tensor host_view() const {
    Tensor h = t_;
    h.data = host_;
    h.device = Device::cpu;
    return h;
  }
  // Copies the host contents back into the tensor (nothing to do when they are the same memory).
  void store() {
    if (host_ != t_.data) be_->copy(t_.data, host_, t_.nbytes());
  }

 private:
  Backend* be_;
  Tensor t_;
  std::unique_ptr<unsigned char[]> staging_;
  void* host_ = nullptr;
};

}  // namespace sft
