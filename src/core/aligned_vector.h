// AlignedVector<T>: a std::vector whose storage starts on a 64-byte (cache line) boundary.
// Scratch that kernels read with full-width loads needs it: AMX tile loads and oneDNN's AMX
// kernels on operands 16 bytes off a line ran at 690 instead of 1,890 GFLOP/s on a 2-core Xeon
// (2048x768 · 768x4096, bench note in bench/README.md), which is where malloc puts large blocks.
#pragma once
#include <sys/mman.h>

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
  // Blocks of 2 MB and more start on a 2 MB boundary and ask for transparent huge pages (as
  // CpuBackend::alloc): the transposed bf16 operands are written 64 bytes per 4 KB row, which on
  // 4 KB pages missed the TLB on nearly every store.
  T* allocate(size_t n) {
    constexpr size_t kHuge = size_t(2) << 20;
    const size_t align = n * sizeof(T) >= kHuge ? kHuge : Align;
    const size_t bytes = (n * sizeof(T) + align - 1) / align * align;
    void* p = std::aligned_alloc(align, bytes ? bytes : align);
    if (!p) throw std::bad_alloc();
    if (align == kHuge) madvise(p, bytes, MADV_HUGEPAGE);  // advisory: ignored where THP is off
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) noexcept { std::free(p); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const { return true; }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace sft
