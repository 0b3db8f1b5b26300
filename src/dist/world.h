// The process's place in a data-parallel job: whether a launcher (mpirun, srun) started it as one
// of several ranks, its rank and its local rank on the node, the Comm that joins the ranks (MPI,
// or a world of one without a launcher), and the start-up check that every rank runs the same
// configuration and data (the fingerprint a resume checks, core/fingerprint.h), and the split of a
// world into nodes (hybrid_shard).
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/fingerprint.h"
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
// GPU ranks' Comm, NCCL bootstrapped over MPI, for a world of any size, one rank included
// (make_world_comm gives a world of one its local Comm; tools/gpu_check.sh checks NCCL on one GPU
// with this). An Error naming what is missing in builds without MPI or NCCL.
std::unique_ptr<Comm> make_nccl_world_comm(Backend& backend);
// Whether this build has MPI, and why not.
bool mpi_built();
bool nccl_built();  // GPU ranks (comm_nccl.cpp) in this build
std::string no_mpi_reason();

// Every rank must train with the same configuration: each item of `config` (the resolved options
// as "--name", the data files' size and XXH3 and the template as a resume checks them against a
// checkpoint, the checkpoint resumed from; core/fingerprint.h) is hashed and gathered; a mismatch
// is an Error on every rank naming the first differing item and the ranks whose value differs
// from rank 0's. Values that may differ per host (paths) are left out by the caller.
void check_same_config(Comm& comm, const Fingerprint& config);

// hybrid_shard's two groups of a world: this rank's node (the ranks sharing its memory) and the
// ranks with the same place in their node on every node (one per node, node order). Every node
// must hold the same number of ranks (an Error on every rank otherwise). Collective over world.
struct NodeComms {
  std::unique_ptr<Comm> node, across;
  bool first = true;  // this node holds world rank 0 (its replica is the one checkpoints read)
};
NodeComms split_by_node(Comm& world);

std::unique_ptr<Comm> make_mpi_comm();  // comm_mpi.cpp (MPI builds only)
// GPU ranks: NCCL for the tensor collectives on the backend's device, `host` (MPI) for the host
// scalars and NCCL's bootstrap. comm_nccl.cpp (builds with CUDA, MPI and NCCL only).
std::unique_ptr<Comm> make_nccl_comm(Backend& backend, std::unique_ptr<Comm> host);

}  // namespace sft
