// The process's place in a data-parallel job: whether a launcher (mpirun, srun) started it as one
// of several ranks, its rank and its local rank on the node, the Comm that joins the ranks (MPI,
// or a world of one without a launcher), and the start-up check that every rank runs the same
// configuration.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dist/comm.h"

namespace sft {

struct LaunchInfo {
  int size = 1, rank = 0;              // world
  int local_size = 1, local_rank = 0;  // ranks on this node
  std::string launcher;                // "mpirun", "srun", or "" (none)
};

// From the launcher's environment: OpenMPI's OMPI_COMM_WORLD_* (mpirun), Slurm's SLURM_NTASKS /
// SLURM_PROCID / SLURM_LOCALID (srun), PMI_SIZE / PMI_RANK (other PMI launchers).
LaunchInfo detect_launch();

// MPI when launched as one of several ranks (an Error when this build has no MPI), else a world
// of one. One per process.
std::unique_ptr<Comm> make_world_comm(Backend& backend, const LaunchInfo& launch);
// Whether this build has MPI, and why not.
bool mpi_built();
bool nccl_built();  // GPU ranks (comm_nccl.cpp) in this build
std::string no_mpi_reason();

// Every rank must train with the same options (name, value): each value is hashed and gathered;
// a mismatch is an Error on every rank naming the first differing option and the ranks whose
// value differs from rank 0's. Values that may differ per host (paths) are left out by the caller.
void check_same_config(Comm& comm, const std::vector<std::pair<std::string, std::string>>& options);

std::unique_ptr<Comm> make_mpi_comm();  // comm_mpi.cpp (MPI builds only)
// GPU ranks: NCCL for the tensor collectives on the backend's device, `host` (MPI) for the host
// scalars and NCCL's bootstrap. comm_nccl.cpp (builds with CUDA, MPI and NCCL only).
std::unique_ptr<Comm> make_nccl_comm(Backend& backend, std::unique_ptr<Comm> host);

}  // namespace sft
