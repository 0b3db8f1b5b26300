// create_backend(): the one place that maps a device name to a Backend implementation.
// CUDA is not built yet: asking for it is a clear error rather than a silent CPU fallback.
#include "backend/backend.h"
#include "backend/cpu/backend_cpu.h"

namespace sft {

std::unique_ptr<Backend> create_backend(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackend>();
  if (name == "cuda")
    fail("backend", "--device cuda: this build has no CUDA backend (it is not implemented yet); "
                    "use --device cpu");
  fail("backend", "unknown device '{}', expected 'cpu' or 'cuda'", name);
}

}  // namespace sft
