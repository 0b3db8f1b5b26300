// Host memory for offloaded state (Backend::alloc_host / free_host): the plain defaults of host
// backends (aligned, zero-filled), and create_host_backend, the CPU backend over a device
// backend's host memory that runs --fsdp offload's host-side math.
#include <cstdlib>
#include <cstring>

#include "backend/backend.h"
#include "backend/cpu/backend_cpu.h"
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

std::unique_ptr<Backend> create_host_backend(Backend& device) {
  auto host = std::make_unique<CpuBackend>();
  host->take_memory_from(&device);
  return host;
}

}  // namespace sft
