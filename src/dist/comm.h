// Comm: the collectives data-parallel training needs (all-reduce, all-gather, reduce-scatter,
// broadcast, barrier), issued asynchronously and completed with wait(). Implementations: a world
// of one (comm_local.cpp, what every single-process run uses), MPI for CPU ranks launched by
// mpirun or srun (comm_mpi.cpp, world.h picks it) and an in-process world of N threads
// (comm_threads.cpp, for tests of the step's collective order); NCCL comes next. A Comm can be
// split into sub-worlds (this rank's node; the ranks with one color): hybrid_shard's groups. This
// folder is the only place allowed to include mpi.h or nccl.h.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace sft {

enum class ReduceOp { sum, max };

// Handle of an issued collective; wait() on it before touching its buffers.
struct CommRequest {
  int64_t id = -1;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // ---- tensor collectives over backend memory (fp32 or bf16), asynchronous ----
  // buf (n) = op over ranks of buf, in place.
  virtual CommRequest all_reduce(Tensor buf, ReduceOp op, const char* what) = 0;
  // out (size * n) = the ranks' in (n), in rank order.
  virtual CommRequest all_gather(Tensor out, Tensor in, const char* what) = 0;
  // out (n) = this rank's block of op over ranks of in (size * n).
  virtual CommRequest reduce_scatter(Tensor out, Tensor in, ReduceOp op, const char* what) = 0;
  // buf = root's buf.
  virtual CommRequest broadcast(Tensor buf, int root, const char* what) = 0;
  virtual void wait(CommRequest request) = 0;

  // ---- host collectives for a step's scalars (blocking) ----
  // v (n) = op over ranks of v. what names the reduction point (errors, collective-order tests).
  virtual void all_reduce_host(double* v, int n, ReduceOp op, const char* what) = 0;
  // out (size * n) = every rank's in (n), in rank order.
  virtual void all_gather_host(const double* in, int n, double* out, const char* what) = 0;
  virtual void barrier(const char* what) = 0;

  // How long a collective may wait for the other ranks before this rank ends the job (HF's
  // --ddp_timeout, seconds > 0; dist/watchdog.h). A world of one has no one to wait for.
  virtual void set_timeout(double seconds) { (void)seconds; }

  // ---- sub-worlds (hybrid_shard), collective: every rank of this Comm calls them in turn ----
  // The ranks that share this rank's node (its memory: MPI_COMM_TYPE_SHARED; a ThreadWorld's
  // simulated nodes), in this Comm's rank order. `what` names the group in logs and watchdog lines.
  virtual std::unique_ptr<Comm> split_node(const char* what);
  // The ranks that passed the same color (>= 0), ordered by key, then by rank in this Comm.
  // Their collectives are watched like this Comm's and end the job past the same --ddp_timeout.
  virtual std::unique_ptr<Comm> split(int color, int key, const char* what);

  // Conveniences over all_reduce_host.
  double sum(double x, const char* what) { all_reduce_host(&x, 1, ReduceOp::sum, what); return x; }
  bool any(bool x, const char* what) {
    double v = x ? 1.0 : 0.0;
    all_reduce_host(&v, 1, ReduceOp::max, what);
    return v != 0.0;
  }
};

// A world of one: every collective is a copy or nothing (the result of a single process).
std::unique_ptr<Comm> make_local_comm(Backend& backend);

// An in-process world of `size` ranks, each driven by its own thread and calling the returned
// Comm of its rank; host memory only (the CPU backend). Every collective is recorded per rank as
// "op:what", so tests can check that all ranks issue the same collectives in the same order.
// A rank that calls a different collective than the others fails with an Error naming both.
class ThreadWorld {
 public:
  // ranks_per_node > 0 simulates nodes of that many ranks (rank / ranks_per_node is the node, what
  // split_node groups by); 0: one node holds every rank.
  explicit ThreadWorld(int size, int ranks_per_node = 0);
  ~ThreadWorld();
  Comm& comm(int rank);
  const std::vector<std::string>& log(int rank) const;
  struct Shared;  // the rendezvous state (comm_threads.cpp)

 private:
  std::unique_ptr<Shared> shared_;
  std::vector<std::unique_ptr<Comm>> comms_;
};

}  // namespace sft
