// MpiComm: Comm over MPI (OpenMPI from Debian), for CPU ranks launched by mpirun or srun. Tensor
// collectives are MPI's non-blocking ones (MPI_Iallreduce, MPI_Iallgather,
// MPI_Ireduce_scatter_block, MPI_Ibcast) on fp32 or bf16 host memory (bf16 moves as 16-bit words;
// its reductions are user-defined ops that add in fp32 and round each partial result to bf16, as
// NCCL's bf16 reductions do), completed by wait(); the step's
// scalars go through MPI_Allreduce in double. Every blocking wait is watched (dist/watchdog.h):
// past --ddp_timeout the rank ends the job. A split (MPI_Comm_split, MPI_Comm_split_type for the
// node) is an MpiComm over the new communicator sharing the world's watchdog and bf16 ops. Built
// only when CMake finds MPI (SFT_HAVE_MPI).
#include <mpi.h>

#include <algorithm>
#include <exception>
#include <string>
#include <unordered_map>

#include "dist/watchdog.h"
#include "dist/world.h"

namespace sft {

namespace {

void check_mpi(int rc, const char* call, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail("mpi", "{} ({}) failed: {}", call, what, std::string(text, size_t(len)));
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::sum ? MPI_SUM : MPI_MAX; }

// MPI user ops over bf16 words: inout[i] = bf16(in[i] op inout[i]), the operation in fp32.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}
void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = f32_to_bf16(std::max(bf16_to_f32(a[i]), bf16_to_f32(b[i])));
}

class MpiComm final : public Comm {
 public:
  MpiComm() : own_dog_(std::make_unique<CollectiveWatchdog>()), dog_(own_dog_.get()) {
    int provided = 0;
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread", "start");
    // Errors come back as return codes, so they name the collective instead of aborting inside MPI.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    check_mpi(MPI_Op_create(bf16_sum, 1, &bf16_sum_), "MPI_Op_create", "bf16 sum");
    check_mpi(MPI_Op_create(bf16_max, 1, &bf16_max_), "MPI_Op_create", "bf16 max");
    if (size_ > 1) dog_->start(dog_->timeout());  // HF's default (1800 s) until set_timeout
  }
  // A sub-world of `parent` over c (owned): the parent's watchdog and bf16 ops, which outlive it
  // (the world Comm is made first and destroyed last).
  MpiComm(MPI_Comm c, const MpiComm& parent, const char* label)
      : comm_(c), label_(label), bf16_sum_(parent.bf16_sum_), bf16_max_(parent.bf16_max_), dog_(parent.dog_) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiComm() override {
    // Unwinding an error on this rank alone: the others may be blocked in a collective, so
    // MPI_Finalize (which waits for every rank) would hang before main prints the error. Leave
    // without it; mpirun ends the job when this process exits without finalizing.
    if (std::uncaught_exceptions() > 0) return;
    for (auto& [id, p] : pending_) {
      const auto watch = dog_->watch(p.op, p.what.c_str());
      MPI_Wait(&p.request, MPI_STATUS_IGNORE);
    }
    if (comm_ != MPI_COMM_WORLD) {
      MPI_Comm_free(&comm_);
      return;
    }
    MPI_Op_free(&bf16_sum_);
    MPI_Op_free(&bf16_max_);
    const auto watch = dog_->watch("finalize", "MPI_Finalize");  // waits for every rank
    MPI_Finalize();
  }
  void set_timeout(double seconds) override { dog_->set_timeout(seconds); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  CommRequest all_reduce(Tensor buf, ReduceOp op, const char* what) override {
    const MPI_Datatype type = host_type(buf, what);
    return issue("all_reduce", what, "MPI_Iallreduce", [&](MPI_Request* r) {
      return MPI_Iallreduce(MPI_IN_PLACE, buf.data, int(buf.numel()), type, reduce_op(op, buf.dtype), comm_, r);
    });
  }
  CommRequest all_gather(Tensor out, Tensor in, const char* what) override {
    const MPI_Datatype type = host_type(in, what);
    host_type(out, what);
    SFT_CHECK(out.numel() == in.numel() * size_ && out.dtype == in.dtype, "comm",
              "{}: all_gather of {} {} into {} {} over {} ranks", what, in.numel(), dtype_name(in.dtype), out.numel(),
              dtype_name(out.dtype), size_);
    return issue("all_gather", what, "MPI_Iallgather", [&](MPI_Request* r) {
      return MPI_Iallgather(in.data, int(in.numel()), type, out.data, int(in.numel()), type, comm_, r);
    });
  }
  CommRequest reduce_scatter(Tensor out, Tensor in, ReduceOp op, const char* what) override {
    const MPI_Datatype type = host_type(in, what);
    host_type(out, what);
    SFT_CHECK(in.numel() == out.numel() * size_ && out.dtype == in.dtype, "comm",
              "{}: reduce_scatter of {} {} into {} {} over {} ranks", what, in.numel(), dtype_name(in.dtype),
              out.numel(), dtype_name(out.dtype), size_);
    return issue("reduce_scatter", what, "MPI_Ireduce_scatter_block", [&](MPI_Request* r) {
      return MPI_Ireduce_scatter_block(in.data, out.data, int(out.numel()), type, reduce_op(op, in.dtype),
                                       comm_, r);
    });
  }
  CommRequest broadcast(Tensor buf, int root, const char* what) override {
    const MPI_Datatype type = host_type(buf, what);
    return issue("broadcast", what, "MPI_Ibcast", [&](MPI_Request* r) {
      return MPI_Ibcast(buf.data, int(buf.numel()), type, root, comm_, r);
    });
  }
  void wait(CommRequest request) override {
    auto it = pending_.find(request.id);
    if (it == pending_.end()) return;
    {
      const auto watch = dog_->watch(it->second.op, it->second.what.c_str());
      check_mpi(MPI_Wait(&it->second.request, MPI_STATUS_IGNORE), "MPI_Wait", it->second.what.c_str());
    }
    pending_.erase(it);
  }
  void all_reduce_host(double* v, int n, ReduceOp op, const char* what) override {
    const auto watch = dog_->watch("all_reduce", named(what).c_str());
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, mpi_op(op), comm_), "MPI_Allreduce", what);
  }
  void all_gather_host(const double* in, int n, double* out, const char* what) override {
    const auto watch = dog_->watch("all_gather", named(what).c_str());
    check_mpi(MPI_Allgather(in, n, MPI_DOUBLE, out, n, MPI_DOUBLE, comm_), "MPI_Allgather", what);
  }
  void barrier(const char* what) override {
    const auto watch = dog_->watch("barrier", named(what).c_str());
    check_mpi(MPI_Barrier(comm_), "MPI_Barrier", what);
  }
  std::unique_ptr<Comm> split_node(const char* what) override {
    MPI_Comm c = MPI_COMM_NULL;
    {
      const auto watch = dog_->watch("split_node", named(what).c_str());
      check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &c), "MPI_Comm_split_type", what);
    }
    return std::make_unique<MpiComm>(c, *this, what);
  }
  std::unique_ptr<Comm> split(int color, int key, const char* what) override {
    SFT_CHECK(color >= 0, "comm", "{}: split with color {}, expected >= 0", what, color);
    MPI_Comm c = MPI_COMM_NULL;
    {
      const auto watch = dog_->watch("split", named(what).c_str());
      check_mpi(MPI_Comm_split(comm_, color, key, &c), "MPI_Comm_split", what);
    }
    return std::make_unique<MpiComm>(c, *this, what);
  }

 private:
  // The MPI type of a host tensor's elements: fp32, or bf16 as 16-bit words.
  static MPI_Datatype host_type(const Tensor& t, const char* what) {
    SFT_CHECK(t.device == Device::cpu && (t.dtype == DType::f32 || t.dtype == DType::bf16), "comm",
              "{}: MPI carries fp32 or bf16 host tensors (CPU ranks); got {} on {}", what, dtype_name(t.dtype),
              t.device == Device::cpu ? "cpu" : "cuda");
    return t.dtype == DType::f32 ? MPI_FLOAT : MPI_UINT16_T;
  }
  MPI_Op reduce_op(ReduceOp op, DType dt) const {
    if (dt == DType::f32) return mpi_op(op);
    return op == ReduceOp::sum ? bf16_sum_ : bf16_max_;
  }
  template <class Start>
  CommRequest issue(const char* op, const char* what, const char* call, Start&& start) {
    MPI_Request r;
    check_mpi(start(&r), call, what);
    const int64_t id = next_id_++;
    pending_.emplace(id, Pending{r, op, named(what)});
    return {id};
  }
  struct Pending {
    MPI_Request request;
    const char* op;    // a literal
    std::string what;  // the caller's name may not outlive the call
  };
  // A sub-world's collectives name it in the watchdog's and the errors' lines: "[node] grads ...".
  std::string named(const char* what) const { return label_.empty() ? what : fmt::format("[{}] {}", label_, what); }
  MPI_Comm comm_ = MPI_COMM_WORLD;
  std::string label_;  // "" for the world
  int rank_ = 0, size_ = 1;
  MPI_Op bf16_sum_ = MPI_OP_NULL, bf16_max_ = MPI_OP_NULL;
  int64_t next_id_ = 0;
  std::unordered_map<int64_t, Pending> pending_;
  std::unique_ptr<CollectiveWatchdog> own_dog_;  // the world's; sub-worlds use it through dog_
  CollectiveWatchdog* dog_ = nullptr;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm() { return std::make_unique<MpiComm>(); }

}  // namespace sft
