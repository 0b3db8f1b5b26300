// Launch detection, the world's Comm, the same-configuration check and the node split (see
// world.h; also Comm's default split, for Comms without sub-worlds). This file is
// compiled with SFT_HAVE_MPI when CMake found MPI; comm_mpi.cpp exists in the build only then.
#include "dist/world.h"

#include <algorithm>
#include <cstdlib>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>

#ifndef SFT_NO_MPI_REASON
#define SFT_NO_MPI_REASON "it was configured without MPI"
#endif
#ifndef SFT_NO_NCCL_REASON
#define SFT_NO_NCCL_REASON "it was configured without NCCL"
#endif

namespace sft {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  SFT_CHECK(*end == '\0' && x >= 0, "launch", "{}='{}' is not a non-negative integer", name, v);
  return int(x);
}

// An item's XXH3 kept to 52 bits, so that it travels exactly as a double.
double hash52(const Fingerprint& f, size_t i) { return double(f.item_hash(i) & ((uint64_t(1) << 52) - 1)); }

}  // namespace

LaunchInfo detect_launch() {
  LaunchInfo l;
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) {
    l.launcher = "mpirun";
    l.size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    l.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    l.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
    l.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
  } else if (std::getenv("SLURM_PROCID") && std::getenv("SLURM_NTASKS")) {
    l.launcher = "srun";
    l.size = env_int("SLURM_NTASKS", 1);
    l.rank = env_int("SLURM_PROCID", 0);
    l.local_rank = env_int("SLURM_LOCALID", 0);
    // SLURM_TASKS_PER_NODE reads like "2(x3),1": this node's count is not in it; the first is.
    if (const char* t = std::getenv("SLURM_TASKS_PER_NODE")) l.local_size = std::max(1, std::atoi(t));
  } else if (std::getenv("PMI_SIZE")) {
    l.launcher = "pmi";
    l.size = env_int("PMI_SIZE", 1);
    l.rank = env_int("PMI_RANK", 0);
  }
  SFT_CHECK(l.size >= 1 && l.rank < l.size, "launch", "rank {} outside a world of {} ({})", l.rank, l.size,
            l.launcher);
  return l;
}

bool mpi_built() {
#ifdef SFT_HAVE_MPI
  return true;
#else
  return false;
#endif
}

bool nccl_built() {
#ifdef SFT_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

std::string no_mpi_reason() { return mpi_built() ? "" : SFT_NO_MPI_REASON; }

std::unique_ptr<Comm> make_world_comm(Backend& backend, const LaunchInfo& launch) {
  if (launch.size <= 1) return make_local_comm(backend);
#ifdef SFT_HAVE_MPI
  std::unique_ptr<Comm> c = make_mpi_comm();
  SFT_CHECK(c->size() == launch.size, "launch", "{} started {} ranks but MPI sees a world of {}", launch.launcher,
            launch.size, c->size());
  if (backend.device() != Device::cuda) return c;
#ifdef SFT_HAVE_NCCL
  return make_nccl_comm(backend, std::move(c));  // GPU ranks: NCCL, bootstrapped over MPI
#else
  fail("launch", "--device cuda across {} ranks needs NCCL, and this build has none ({}); install NCCL (the CUDA "
                 "toolkit's, or nvidia-nccl-cu13) and rebuild", launch.size, SFT_NO_NCCL_REASON);
#endif
#else
  fail("launch", "started by {} as rank {} of {}, but this build has no MPI ({}); install openmpi-bin and "
                 "libopenmpi-dev and rebuild (scripts/setup.sh)",
       launch.launcher, launch.rank, launch.size, SFT_NO_MPI_REASON);
#endif
}

std::unique_ptr<Comm> make_nccl_world_comm(Backend& backend) {
#if defined(SFT_HAVE_MPI) && defined(SFT_HAVE_NCCL)
  return make_nccl_comm(backend, make_mpi_comm());
#else
  (void)backend;
  fail("launch", "NCCL needs MPI and NCCL in the build: MPI {}, NCCL {}", mpi_built() ? "built" : no_mpi_reason(),
       nccl_built() ? "built" : "not built");
#endif
}

void check_same_config(Comm& comm, const Fingerprint& config) {
  const std::vector<FingerprintItem>& items = config.items();
  const int n = int(items.size()), N = comm.size();
  // The item counts first: a different count (another sft build) would misalign the hashes.
  double count = n;
  std::vector<double> counts(size_t(N), 0.0);
  comm.all_gather_host(&count, 1, counts.data(), "config_check_count");
  for (int r = 0; r < N; ++r)
    SFT_CHECK(counts[size_t(r)] == counts[0], "launch",
              "ranks run different sft builds: rank {} checks {} configuration items, rank 0 checks {} (this is rank "
              "{}); start every rank with the same sft binary", r, counts[size_t(r)], counts[0], comm.rank());
  std::vector<double> mine(items.size()), all(size_t(n) * size_t(N));
  for (size_t i = 0; i < items.size(); ++i) mine[i] = hash52(config, i);
  comm.all_gather_host(mine.data(), n, all.data(), "config_check");
  for (int i = 0; i < n; ++i) {
    std::vector<int> differ;
    for (int r = 1; r < N; ++r)
      if (all[size_t(r) * size_t(n) + size_t(i)] != all[size_t(i)]) differ.push_back(r);
    if (differ.empty()) continue;
    fail("launch", "ranks run different configurations: {} differs from rank 0's on rank(s) {} (this is rank {}, "
                   "with '{}'); start every rank with the same flags and the same data",
         items[size_t(i)].name, fmt::join(differ, ", "), comm.rank(), items[size_t(i)].value);
  }
}

std::unique_ptr<Comm> Comm::split_node(const char* what) {
  fail("comm", "{}: this Comm has no sub-worlds (hybrid_shard is built for CPU ranks over MPI, not GPU ranks)", what);
}
std::unique_ptr<Comm> Comm::split(int, int, const char* what) { return split_node(what); }

NodeComms split_by_node(Comm& world) {
  NodeComms out;
  out.node = world.split_node("node");
  const double mine = out.node->size();
  std::vector<double> sizes(size_t(world.size()));
  world.all_gather_host(&mine, 1, sizes.data(), "node sizes");
  for (int r = 0; r < world.size(); ++r)
    SFT_CHECK(sizes[size_t(r)] == sizes[0], "launch",
              "hybrid_shard needs the same number of ranks on every node: rank {}'s node has {}, rank 0's has {} "
              "(this is rank {}); start as many ranks on each host (mpirun --host a:L,b:L or a hostfile's slots)",
              r, sizes[size_t(r)], sizes[0], world.rank());
  out.first = out.node->any(world.rank() == 0, "node of rank 0");
  out.across = world.split(out.node->rank(), world.rank(), "across");
  return out;
}

}  // namespace sft
