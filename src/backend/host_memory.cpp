// create_host_backend: the CPU backend over a device backend's host memory (Backend::alloc_host /
// free_host, whose plain defaults are in backend.cpp) that runs --fsdp offload's host-side math.
#include "backend/backend.h"
#include "backend/cpu/backend_cpu.h"

namespace sft {

std::unique_ptr<Backend> create_host_backend(Backend& device) {
  auto host = std::make_unique<CpuBackend>();
  host->take_memory_from(&device);
  return host;
}

}  // namespace sft
