// AlignedVector<T>: a std::vector whose storage starts on a 64-byte (cache line) boundary.
// Scratch that kernels read with full-width loads needs it: AMX tile loads and oneDNN's AMX
// kernels on operands 16 bytes off a line ran at 690 instead of 1,890 GFLOP/s on a 2-core Xeon
// (2048x768 · 768x4096, bench note in bench/README.md), which is where malloc puts large blocks.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace sft {

template <class T, size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) {}
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  T* allocate(size_t n) {
    const size_t bytes = (n * sizeof(T) + Align - 1) / Align * Align;
    void* p = std::aligned_alloc(Align, bytes ? bytes : Align);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) noexcept { std::free(p); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const { return true; }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace sft
