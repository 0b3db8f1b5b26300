// The CUDA backend's entry points for backend/registry.cpp, which includes this only when the
// build has the CUDA backend (SFT_HAVE_CUDA). No CUDA headers, so plain C++ code can include it.
#pragma once
#include <memory>
#include <string>

#include "backend/backend.h"

namespace sft {

// local_rank < 0: the current device (0 unless the caller chose one); else the node-local rank's
// GPU (rank r on GPU r; a rank that sees exactly one GPU, as Slurm's --gpus-per-task leaves it,
// uses that one).
std::unique_ptr<Backend> create_cuda_backend(int local_rank = -1);
// "" when a GPU this build can use is present, else why not (no driver, no GPU, too old a GPU).
std::string cuda_probe();

}  // namespace sft
