// NcclComm: Comm for GPU ranks. Tensor collectives are NCCL's (ncclAllReduce, ncclAllGather,
// ncclReduceScatter, ncclBroadcast) on device memory in fp32 or bf16, run on a stream of their own
// so they overlap the backend's compute: each waits for the compute work issued before it (an
// event on the backend's stream) and wait() makes later compute wait for it (stream order, no
// host sync). The step's host scalars and the bootstrap (ncclUniqueId from rank 0, MPI_Bcast)
// go through MPI, which launched the ranks. The communicator is non-blocking (config.blocking = 0):
// no NCCL call blocks the host; a call that returns ncclInProgress (init, a collective still being
// enqueued in the background, finalize) is followed by polling ncclCommGetAsyncError until the
// state leaves ncclInProgress, bounded by --ddp_timeout, before anything else touches the
// communicator or its stream. Calls on the communicator are serialized by a mutex (NCCL forbids
// concurrent calls on one communicator; being non-blocking, none holds it long), so a watchdog
// thread can poll ncclCommGetAsyncError about once a second and follow every collective's
// completion event: a NCCL error, or a collective not complete --ddp_timeout seconds after it was
// issued, aborts the communicator (ncclCommAbort) and ends the process so the launcher ends the
// job. Sub-worlds (hybrid_shard's node and across groups): split_node / split split the host Comm
// the same way (its own split_node / split) and the communicator with ncclCommSplit (non-blocking,
// polled like the init; color: the group, key: this rank's place in the host group, so NCCL's
// ranks are the host's). The world and its sub-worlds are one family: one mutex around every NCCL
// call on any of them, one stream for all their collectives, one watchdog following all of them
// (their collectives named "[node] ...", "[across] ..."), and a fault in any aborts all. Built only
// with CUDA, MPI and NCCL (SFT_HAVE_NCCL).
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "core/log.h"
#include "dist/watchdog.h"
#include "dist/world.h"

namespace sft {

namespace {

void check_nccl(ncclResult_t rc, const char* call, const char* what) {
  if (rc == ncclSuccess) return;
  fail("nccl", "{} ({}) failed: {}{}", call, what, ncclGetErrorString(rc),
       rc == ncclSystemError || rc == ncclRemoteError ? " (a rank may have died; see its error above)" : "");
}

void check_cuda(cudaError_t rc, const char* call, const char* what) {
  if (rc == cudaSuccess) return;
  fail("nccl", "{} ({}) failed: {}", call, what, cudaGetErrorString(rc));
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::sum ? ncclSum : ncclMax; }

// The config of every communicator here: non-blocking (no call blocks the host; settle() polls),
// and a split owns its resources (splitShare 0), so each communicator is finalized, destroyed or
// aborted on its own, in whatever order its Comm is destroyed.
ncclConfig_t nonblocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.splitShare = 0;
  return config;
}

class NcclComm;

// What the world's NcclComm shares with the sub-worlds split from it (and theirs): one lock for
// every NCCL call on any of their communicators, so the watchdog polls and aborts them all without
// racing a call; one stream for all their collectives, which every rank issues in the same order
// (kernels of two communicators never wait on each other in opposite orders on two ranks); one
// timeout; one watchdog thread following every member. Owned jointly by its Comms (shared_ptr):
// the last one destroyed stops the watchdog and destroys the stream.
struct NcclFamily {
  std::mutex nccl_mu;            // held by every call on a communicator of the family
  bool aborted = false;          // a fault aborted every communicator (under nccl_mu)
  std::vector<ncclComm_t> live;  // created and not yet destroyed (under nccl_mu): what a fault aborts
  std::atomic<double> timeout_s{1800.0};
  cudaStream_t stream = nullptr;
  int device = 0;
  // The watchdog (started by the world when it has several ranks).
  std::mutex wd_mu;  // guards members, their in-flight lists and wd_stop; taken before nccl_mu, never after
  std::condition_variable wd_cv;
  bool wd_stop = false;
  std::vector<NcclComm*> members;  // the Comms whose collectives the watchdog follows
  std::thread watchdog;

  ~NcclFamily() {
    {
      std::lock_guard<std::mutex> lock(wd_mu);
      wd_stop = true;
    }
    wd_cv.notify_all();
    if (watchdog.joinable()) watchdog.join();
    if (stream) cudaStreamDestroy(stream);
  }
  // Aborts every live communicator of the family (NCCL then ends their kernels waiting on a dead
  // peer); nccl_mu held. A fault in one group aborts them all: the others' peers are the same ranks.
  void abort_all_locked() {
    if (aborted) return;
    for (ncclComm_t c : live) ncclCommAbort(c);
    live.clear();
    aborted = true;
  }
  void abort_all() {
    std::lock_guard<std::mutex> lock(nccl_mu);
    abort_all_locked();
  }
  void watch();  // the watchdog thread's loop (below NcclComm)
};

class NcclComm final : public Comm {
 public:
  // The world: every rank of `host`, NCCL bootstrapped over MPI (rank 0's unique id).
  NcclComm(Backend& backend, std::unique_ptr<Comm> host)
      : be_(backend), host_(std::move(host)), fam_(std::make_shared<NcclFamily>()) {
    SFT_CHECK(be_.device() == Device::cuda && be_.native_stream(), "nccl",
              "NCCL joins GPU ranks: the backend is {}, expected cuda", be_.name());
    compute_ = static_cast<cudaStream_t>(be_.native_stream());
    ncclUniqueId id{};
    if (host_->rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", "start");
    SFT_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD) == MPI_SUCCESS, "nccl",
              "MPI_Bcast of the NCCL unique id from rank 0 failed");
    ncclConfig_t config = nonblocking_config();
    ncclResult_t rc = ncclSuccess;
    {
      std::lock_guard<std::mutex> lock(fam_->nccl_mu);
      rc = ncclCommInitRankConfig(&comm_, host_->size(), id, host_->rank(), &config);
      if (comm_) fam_->live.push_back(comm_);
    }
    settle(rc, "ncclCommInitRankConfig", "start");  // every rank's init, bounded by the timeout
    check_cuda(cudaStreamCreateWithFlags(&fam_->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", "start");
    check_cuda(cudaGetDevice(&fam_->device), "cudaGetDevice", "start");
    join_watch();
    if (host_->size() > 1) fam_->watchdog = std::thread([f = fam_.get()] { f->watch(); });
  }
  // A sub-world of `parent` over `host` (the same split of the parent's host Comm); comm is
  // ncclCommSplit's, maybe still in progress: make_child settles it.
  NcclComm(const NcclComm& parent, std::unique_ptr<Comm> host, ncclComm_t comm, const char* label)
      : be_(parent.be_), host_(std::move(host)), fam_(parent.fam_), compute_(parent.compute_), comm_(comm),
        label_(label) {}
  // Nothing here may throw. A normal end finalizes this communicator (every rank's issued work
  // flushed; polled with the timeout) and destroys it; unwinding an error, or a finalize that
  // fails, aborts the whole family instead: finalizing would wait for ranks that may be blocked
  // elsewhere. Sub-worlds are destroyed before the world (their owners, the store's NodeComms, go
  // first), as their host MPI communicators must be freed before MPI_Finalize; the family (stream,
  // watchdog) goes with the last of them.
  ~NcclComm() override {
    {
      std::lock_guard<std::mutex> lock(fam_->wd_mu);
      auto& m = fam_->members;
      m.erase(std::remove(m.begin(), m.end(), this), m.end());
      for (Inflight& f : inflight_) cudaEventDestroy(f.done);
      inflight_.clear();
    }
    for (auto& [id, e] : pending_) cudaEventDestroy(e);
    if (!comm_) return;
    std::lock_guard<std::mutex> lock(fam_->nccl_mu);
    if (fam_->aborted) return;  // a fault aborted it with the others
    if (std::uncaught_exceptions() > 0) {
      fam_->abort_all_locked();
      return;
    }
    ncclResult_t rc = ncclCommFinalize(comm_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(fam_->timeout_s.load());
    ncclResult_t state = rc;
    while (rc == ncclInProgress || (rc == ncclSuccess && state == ncclInProgress)) {
      if (std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      rc = ncclCommGetAsyncError(comm_, &state);
    }
    if (rc != ncclSuccess || state != ncclSuccess) {
      fam_->abort_all_locked();
      return;
    }
    ncclCommDestroy(comm_);
    auto& live = fam_->live;
    live.erase(std::remove(live.begin(), live.end(), comm_), live.end());
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  void set_timeout(double seconds) override {
    host_->set_timeout(seconds);  // the host scalars' MPI collectives (the world's watchdog, shared)
    fam_->timeout_s.store(seconds);
  }

  CommRequest all_reduce(Tensor buf, ReduceOp op, const char* what) override {
    return issue("all_reduce", what, "ncclAllReduce", [&] {
      return ncclAllReduce(buf.data, buf.data, size_t(buf.numel()), dtype(buf, what), nccl_op(op), comm_,
                           fam_->stream);
    });
  }
  CommRequest all_gather(Tensor out, Tensor in, const char* what) override {
    SFT_CHECK(out.numel() == in.numel() * size() && out.dtype == in.dtype, "comm",
              "{}: all_gather of {} {} into {} {} over {} ranks", named(what), in.numel(), dtype_name(in.dtype),
              out.numel(), dtype_name(out.dtype), size());
    return issue("all_gather", what, "ncclAllGather", [&] {
      return ncclAllGather(in.data, out.data, size_t(in.numel()), dtype(in, what), comm_, fam_->stream);
    });
  }
  CommRequest reduce_scatter(Tensor out, Tensor in, ReduceOp op, const char* what) override {
    SFT_CHECK(in.numel() == out.numel() * size() && out.dtype == in.dtype, "comm",
              "{}: reduce_scatter of {} {} into {} {} over {} ranks", named(what), in.numel(), dtype_name(in.dtype),
              out.numel(), dtype_name(out.dtype), size());
    return issue("reduce_scatter", what, "ncclReduceScatter", [&] {
      return ncclReduceScatter(in.data, out.data, size_t(out.numel()), dtype(in, what), nccl_op(op), comm_,
                               fam_->stream);
    });
  }
  CommRequest broadcast(Tensor buf, int root, const char* what) override {
    return issue("broadcast", what, "ncclBroadcast", [&] {
      return ncclBroadcast(buf.data, buf.data, size_t(buf.numel()), dtype(buf, what), root, comm_, fam_->stream);
    });
  }
  // Later compute waits for the collective on the GPU; the host does not block.
  void wait(CommRequest request) override {
    auto it = pending_.find(request.id);
    if (it == pending_.end()) return;
    check_cuda(cudaStreamWaitEvent(compute_, it->second, 0), "cudaStreamWaitEvent", "collective");
    cudaEventDestroy(it->second);
    pending_.erase(it);
  }
  void all_reduce_host(double* v, int n, ReduceOp op, const char* what) override {
    host_->all_reduce_host(v, n, op, what);
  }
  void all_gather_host(const double* in, int n, double* out, const char* what) override {
    host_->all_gather_host(in, n, out, what);
  }
  // Waits for the family's stream (every group's collectives issued so far), then the host barrier.
  void barrier(const char* what) override {
    check_cuda(cudaStreamSynchronize(fam_->stream), "cudaStreamSynchronize", what);
    host_->barrier(what);
  }

  // ---- sub-worlds: the host Comm split the same way, the communicator by ncclCommSplit ----
  std::unique_ptr<Comm> split_node(const char* what) override {
    std::unique_ptr<Comm> host = host_->split_node(what);  // the ranks sharing this node's memory
    // NCCL has no split by node: the group's color is its first rank in this Comm (the same on
    // every member, different for every node).
    double first = -double(rank());
    host->all_reduce_host(&first, 1, ReduceOp::max, "first rank");
    return make_child(std::move(host), int(-first), what);
  }
  std::unique_ptr<Comm> split(int color, int key, const char* what) override {
    SFT_CHECK(color >= 0, "comm", "{}: split with color {}, expected >= 0", what, color);
    return make_child(host_->split(color, key, what), color, what);
  }

  // The watchdog's look at this Comm, wd_mu held: the completed collectives are dropped; a NCCL
  // error, or the oldest collective older than `timeout`, is returned as the line to print ("" if
  // none, or if the family was aborted: the thread that aborted it is reporting).
  std::string check(double timeout) {
    while (!inflight_.empty() && cudaEventQuery(inflight_.front().done) == cudaSuccess) {
      cudaEventDestroy(inflight_.front().done);
      inflight_.pop_front();
    }
    ncclResult_t async = ncclSuccess, rc = ncclSuccess;
    {
      std::lock_guard<std::mutex> lock(fam_->nccl_mu);
      if (fam_->aborted) return "";
      rc = ncclCommGetAsyncError(comm_, &async);
    }
    const std::string group = label_.empty() ? "the world's" : "the [" + label_ + "] group's";
    if (rc != ncclSuccess)
      return fmt::format("[dist] ncclCommGetAsyncError on {} communicator failed: {}", group, ncclGetErrorString(rc));
    if (async != ncclSuccess && async != ncclInProgress)
      return fmt::format("[dist] NCCL reports an error on {} communicator: {} (a rank may have died; see its error "
                         "above); ending this job", group, ncclGetErrorString(async));
    if (inflight_.empty()) return "";
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - inflight_.front().issued).count();
    return waited > timeout ? CollectiveWatchdog::message(inflight_.front().op, inflight_.front().what, waited, timeout)
                            : "";
  }

 private:
  static ncclDataType_t dtype(const Tensor& t, const char* what) {
    SFT_CHECK(t.device == Device::cuda && (t.dtype == DType::f32 || t.dtype == DType::bf16), "comm",
              "{}: NCCL carries fp32 or bf16 device tensors; got {} on {}", what, dtype_name(t.dtype),
              t.device == Device::cpu ? "cpu" : "cuda");
    return t.dtype == DType::f32 ? ncclFloat32 : ncclBfloat16;
  }
  // A sub-world's collectives name it, as MpiComm's do: "[node] grads layers.3".
  std::string named(const char* what) const { return label_.empty() ? what : fmt::format("[{}] {}", label_, what); }

  // The watchdog follows this Comm's collectives from now on (after its init or split settled).
  void join_watch() {
    std::lock_guard<std::mutex> lock(fam_->wd_mu);
    fam_->members.push_back(this);
  }

  // The communicator of `host`'s group, split from this one. ncclCommSplit is collective over this
  // Comm: every rank calls it, right after the host split every rank just made. color names the
  // group; the key is this rank's place in the host group, so NCCL's ranks are the host's (checked).
  std::unique_ptr<Comm> make_child(std::unique_ptr<Comm> host, int color, const char* what) {
    const int key = host->rank(), want_size = host->size();
    ncclConfig_t config = nonblocking_config();
    ncclComm_t c = nullptr;
    ncclResult_t rc = ncclSuccess;
    {
      std::lock_guard<std::mutex> lock(fam_->nccl_mu);
      SFT_CHECK(!fam_->aborted, "nccl", "ncclCommSplit ({}) on a communicator that was aborted after an error", what);
      rc = ncclCommSplit(comm_, color, key, &c, &config);
      if (c) fam_->live.push_back(c);
    }
    SFT_CHECK(c || rc != ncclSuccess, "nccl", "ncclCommSplit ({}, color {}) returned no communicator for this rank",
              what, color);
    auto child = std::make_unique<NcclComm>(*this, std::move(host), c, what);
    // Polled at least once even on ncclSuccess: the new communicator's init, and then the parent's
    // state (the split runs over the parent's bootstrap), leave ncclInProgress before either is used.
    child->settle(rc == ncclSuccess ? ncclInProgress : rc, "ncclCommSplit", "split");
    settle(ncclInProgress, "ncclCommSplit", fmt::format("split into {}", what).c_str());
    int count = 0, nccl_rank = -1;
    {
      std::lock_guard<std::mutex> lock(fam_->nccl_mu);
      check_nccl(ncclCommCount(c, &count), "ncclCommCount", what);
      check_nccl(ncclCommUserRank(c, &nccl_rank), "ncclCommUserRank", what);
    }
    SFT_CHECK(count == want_size && nccl_rank == key, "nccl",
              "{}: ncclCommSplit (color {}) made a group of {} ranks with this rank at {}; the host split has {} ranks "
              "with this rank at {}", what, color, count, nccl_rank, want_size, key);
    child->join_watch();
    return child;
  }

  // The collective starts after the compute issued so far (its inputs are written) and records
  // an event for wait().
  template <class Start>
  CommRequest issue(const char* op, const char* what, const char* call, Start&& start) {
    cudaStream_t stream = fam_->stream;
    cudaEvent_t ready = nullptr, done = nullptr;
    check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate", what);
    check_cuda(cudaEventRecord(ready, compute_), "cudaEventRecord", what);
    check_cuda(cudaStreamWaitEvent(stream, ready, 0), "cudaStreamWaitEvent", what);
    cudaEventDestroy(ready);  // destroyed once the recorded work completes
    ncclResult_t rc = ncclSuccess;
    {
      std::lock_guard<std::mutex> lock(fam_->nccl_mu);
      SFT_CHECK(!fam_->aborted, "nccl", "{} ({}) on a communicator that was aborted after an error", call, named(what));
      rc = start();
    }
    settle(rc, call, what);  // its kernels are on the stream now: the event below follows them
    check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreate", what);
    check_cuda(cudaEventRecord(done, stream), "cudaEventRecord", what);
    const int64_t id = next_id_++;
    pending_.emplace(id, done);
    if (fam_->watchdog.joinable()) {  // the watchdog's own event: wait() destroys `done` before it completes
      cudaEvent_t watched = nullptr;
      check_cuda(cudaEventCreateWithFlags(&watched, cudaEventDisableTiming), "cudaEventCreate", what);
      check_cuda(cudaEventRecord(watched, stream), "cudaEventRecord", what);
      std::lock_guard<std::mutex> lock(fam_->wd_mu);
      inflight_.push_back({watched, std::chrono::steady_clock::now(), op, named(what)});
    }
    return {id};
  }

  // After a call on the non-blocking communicator returned `rc`: ncclSuccess means its work is
  // issued; ncclInProgress means NCCL is still carrying it out in the background, and the state
  // must be polled (ncclCommGetAsyncError) until it leaves ncclInProgress before the next call or
  // any CUDA call on its stream. An error, or still in progress after --ddp_timeout seconds (a rank
  // that stopped answering during init or connection setup), aborts the family and throws.
  void settle(ncclResult_t rc, const char* call, const char* what) {
    const auto start = std::chrono::steady_clock::now();
    auto pause = std::chrono::microseconds(20);
    ncclResult_t state = rc;
    while (rc == ncclInProgress || (rc == ncclSuccess && state == ncclInProgress)) {
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > fam_->timeout_s.load()) {
        fam_->abort_all();
        fail("dist", "{} ({}) was still in progress after {:.0f} s, more than --ddp_timeout {:.0f}: another rank "
                     "stopped responding; communicators aborted, ending this job", call, named(what), waited,
             fam_->timeout_s.load());
      }
      std::this_thread::sleep_for(pause);
      pause = std::min<std::chrono::microseconds>(2 * pause, std::chrono::milliseconds(1));
      std::lock_guard<std::mutex> lock(fam_->nccl_mu);
      SFT_CHECK(!fam_->aborted, "nccl", "{} ({}): the communicators were aborted while it was in progress", call,
                named(what));
      rc = ncclCommGetAsyncError(comm_, &state);
    }
    if (rc == ncclSuccess && state == ncclSuccess) return;
    const ncclResult_t err = rc != ncclSuccess ? rc : state;
    std::string detail;
    {
      std::lock_guard<std::mutex> lock(fam_->nccl_mu);
      const char* last = comm_ && !fam_->aborted ? ncclGetLastError(comm_) : nullptr;
      detail = last ? last : "";
      fam_->abort_all_locked();
    }
    fail("nccl", "{} ({}) failed: {}{}{}; communicators aborted", call, named(what), ncclGetErrorString(err),
         detail.empty() ? "" : ": " + detail,
         err == ncclSystemError || err == ncclRemoteError ? " (a rank may have died; see its error above)" : "");
  }

  Backend& be_;
  std::unique_ptr<Comm> host_;        // destroyed after fam_: the world's MPI_Finalize comes last
  std::shared_ptr<NcclFamily> fam_;
  cudaStream_t compute_ = nullptr;    // the backend's
  ncclComm_t comm_ = nullptr;
  std::string label_;                 // "" for the world; a sub-world's name (split's `what`)
  int64_t next_id_ = 0;
  std::unordered_map<int64_t, cudaEvent_t> pending_;
  struct Inflight {
    cudaEvent_t done;
    std::chrono::steady_clock::time_point issued;
    const char* op;    // a literal
    std::string what;  // named: the caller's name may not outlive the call
  };
  std::deque<Inflight> inflight_;  // under fam_->wd_mu; only when the watchdog runs
};

// The watchdog thread: each member's collectives complete in stream order, so its oldest
// incomplete one is the front of its list. A NCCL error on any communicator, or a collective older
// than the timeout, aborts every communicator of the family (which unblocks the kernels waiting on
// a dead peer) and ends the process.
void NcclFamily::watch() {
  cudaSetDevice(device);
  std::unique_lock<std::mutex> lock(wd_mu);
  for (;;) {
    const double timeout = timeout_s.load();
    const auto period = std::chrono::duration<double>(std::min(1.0, std::max(0.01, timeout / 4)));
    if (wd_cv.wait_for(lock, period, [this] { return wd_stop; })) return;
    std::string why;
    for (NcclComm* m : members)
      if (!(why = m->check(timeout)).empty()) break;
    if (why.empty()) {
      std::lock_guard<std::mutex> nccl_lock(nccl_mu);
      if (aborted) return;  // the compute thread's settle() ended it and is reporting
      continue;
    }
    std::fflush(stdout);
    std::fprintf(stderr, "%serror: %s\n", rank_prefix().c_str(), why.c_str());
    std::fflush(stderr);
    // Abort and end the process holding the lock, so that no call of the compute thread reaches
    // an aborted (freed) communicator in between.
    nccl_mu.lock();
    abort_all_locked();
    std::_Exit(1);  // no destructors: they would wait on the aborted work
  }
}

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(Backend& backend, std::unique_ptr<Comm> host) {
  return std::make_unique<NcclComm>(backend, std::move(host));
}

}  // namespace sft
