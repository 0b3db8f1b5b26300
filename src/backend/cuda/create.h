// The CUDA backend's entry points for backend/registry.cpp, which includes this only when the
// build has the CUDA backend (SFT_HAVE_CUDA). No CUDA headers, so plain C++ code can include it.
#pragma once
#include <memory>
#include <string>

#include "backend/backend.h"

namespace sft {

std::unique_ptr<Backend> create_cuda_backend();
// "" when a GPU this build can use is present, else why not (no driver, no GPU, too old a GPU).
std::string cuda_probe();

}  // namespace sft
