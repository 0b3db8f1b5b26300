// The Backend interface's out-of-line defaults (backend.h): plain host memory for offloaded state,
// aligned and zero-filled, which backends without pinned memory use as is. Its own file so that
// builds that take no backend (the fuzz targets' host backend) still get Backend's vtable.
#include <cstdlib>
#include <cstring>

#include "backend/backend.h"
#include "core/check.h"

namespace sft {

void* Backend::alloc_host(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!p) fail("backend", "out of host memory allocating {} MB", bytes >> 20);
  std::memset(p, 0, rounded);
  return p;
}

void Backend::free_host(void* ptr) { std::free(ptr); }

}  // namespace sft
