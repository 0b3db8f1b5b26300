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
// job. Built only with CUDA, MPI and NCCL (SFT_HAVE_NCCL).
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
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

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

class NcclComm final : public Comm {
 public:
  NcclComm(Backend& backend, std::unique_ptr<Comm> host) : be_(backend), host_(std::move(host)) {
    SFT_CHECK(be_.device() == Device::cuda && be_.native_stream(), "nccl",
              "NCCL joins GPU ranks: the backend is {}, expected cuda", be_.name());
    compute_ = static_cast<cudaStream_t>(be_.native_stream());
    ncclUniqueId id{};
    if (host_->rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", "start");
    SFT_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD) == MPI_SUCCESS, "nccl",
              "MPI_Bcast of the NCCL unique id from rank 0 failed");
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t rc = ncclSuccess;
    {
      std::lock_guard<std::mutex> lock(nccl_mu_);
      rc = ncclCommInitRankConfig(&comm_, host_->size(), id, host_->rank(), &config);
    }
    settle(rc, "ncclCommInitRankConfig", "start");  // every rank's init, bounded by the timeout
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", "start");
    check_cuda(cudaGetDevice(&device_), "cudaGetDevice", "start");
    if (host_->size() > 1) watchdog_ = std::thread([this] { watch(); });
  }
  // Nothing here may throw. A normal end finalizes (every rank's issued work flushed; polled with
  // the timeout) and destroys; unwinding an error, or a communicator that failed, aborts instead:
  // finalizing would wait for ranks that may be blocked elsewhere.
  ~NcclComm() override {
    {
      std::lock_guard<std::mutex> lock(wd_mu_);
      wd_stop_ = true;
    }
    wd_cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    for (Inflight& f : inflight_) cudaEventDestroy(f.done);
    for (auto& [id, e] : pending_) cudaEventDestroy(e);
    std::lock_guard<std::mutex> lock(nccl_mu_);
    if (!aborted_ && std::uncaught_exceptions() == 0) {
      ncclResult_t rc = ncclCommFinalize(comm_);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_.load());
      ncclResult_t state = rc;
      while (rc == ncclInProgress || (rc == ncclSuccess && state == ncclInProgress)) {
        if (std::chrono::steady_clock::now() > deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        rc = ncclCommGetAsyncError(comm_, &state);
      }
      if (rc == ncclSuccess && state == ncclSuccess) {
        ncclCommDestroy(comm_);
        aborted_ = true;  // released
      }
    }
    if (!aborted_) ncclCommAbort(comm_);
    cudaStreamDestroy(stream_);
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  void set_timeout(double seconds) override {
    host_->set_timeout(seconds);  // the host scalars' MPI collectives
    timeout_s_.store(seconds);
  }

  CommRequest all_reduce(Tensor buf, ReduceOp op, const char* what) override {
    return issue("all_reduce", what, "ncclAllReduce", [&] {
      return ncclAllReduce(buf.data, buf.data, size_t(buf.numel()), dtype(buf, what), nccl_op(op), comm_, stream_);
    });
  }
  CommRequest all_gather(Tensor out, Tensor in, const char* what) override {
    SFT_CHECK(out.numel() == in.numel() * size() && out.dtype == in.dtype, "comm",
              "{}: all_gather of {} {} into {} {} over {} ranks", what, in.numel(), dtype_name(in.dtype), out.numel(),
              dtype_name(out.dtype), size());
    return issue("all_gather", what, "ncclAllGather", [&] {
      return ncclAllGather(in.data, out.data, size_t(in.numel()), dtype(in, what), comm_, stream_);
    });
  }
  CommRequest reduce_scatter(Tensor out, Tensor in, ReduceOp op, const char* what) override {
    SFT_CHECK(in.numel() == out.numel() * size() && out.dtype == in.dtype, "comm",
              "{}: reduce_scatter of {} {} into {} {} over {} ranks", what, in.numel(), dtype_name(in.dtype),
              out.numel(), dtype_name(out.dtype), size());
    return issue("reduce_scatter", what, "ncclReduceScatter", [&] {
      return ncclReduceScatter(in.data, out.data, size_t(out.numel()), dtype(in, what), nccl_op(op), comm_, stream_);
    });
  }
  CommRequest broadcast(Tensor buf, int root, const char* what) override {
    return issue("broadcast", what, "ncclBroadcast", [&] {
      return ncclBroadcast(buf.data, buf.data, size_t(buf.numel()), dtype(buf, what), root, comm_, stream_);
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
  void barrier(const char* what) override {
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize", what);
    host_->barrier(what);
  }

 private:
  static ncclDataType_t dtype(const Tensor& t, const char* what) {
    SFT_CHECK(t.device == Device::cuda && (t.dtype == DType::f32 || t.dtype == DType::bf16), "comm",
              "{}: NCCL carries fp32 or bf16 device tensors; got {} on {}", what, dtype_name(t.dtype),
              t.device == Device::cpu ? "cpu" : "cuda");
    return t.dtype == DType::f32 ? ncclFloat32 : ncclBfloat16;
  }
  // The collective starts after the compute issued so far (its inputs are written) and records
  // an event for wait().
  template <class Start>
  CommRequest issue(const char* op, const char* what, const char* call, Start&& start) {
    cudaEvent_t ready = nullptr, done = nullptr;
    check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate", what);
    check_cuda(cudaEventRecord(ready, compute_), "cudaEventRecord", what);
    check_cuda(cudaStreamWaitEvent(stream_, ready, 0), "cudaStreamWaitEvent", what);
    cudaEventDestroy(ready);  // destroyed once the recorded work completes
    ncclResult_t rc = ncclSuccess;
    {
      std::lock_guard<std::mutex> lock(nccl_mu_);
      SFT_CHECK(!aborted_, "nccl", "{} ({}) on a communicator that was aborted after an error", call, what);
      rc = start();
    }
    settle(rc, call, what);  // its kernels are on stream_ now: the event below follows them
    check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreate", what);
    check_cuda(cudaEventRecord(done, stream_), "cudaEventRecord", what);
    const int64_t id = next_id_++;
    pending_.emplace(id, done);
    if (watchdog_.joinable()) {  // the watchdog's own event: wait() destroys `done` before it completes
      cudaEvent_t watched = nullptr;
      check_cuda(cudaEventCreateWithFlags(&watched, cudaEventDisableTiming), "cudaEventCreate", what);
      check_cuda(cudaEventRecord(watched, stream_), "cudaEventRecord", what);
      std::lock_guard<std::mutex> lock(wd_mu_);
      inflight_.push_back({watched, std::chrono::steady_clock::now(), op, what});
    }
    return {id};
  }

  // After a call on the non-blocking communicator returned `rc`: ncclSuccess means its work is
  // issued; ncclInProgress means NCCL is still carrying it out in the background, and the state
  // must be polled (ncclCommGetAsyncError) until it leaves ncclInProgress before the next call or
  // any CUDA call on its stream. An error, or still in progress after --ddp_timeout seconds (a rank
  // that stopped answering during init or connection setup), aborts the communicator and throws.
  void settle(ncclResult_t rc, const char* call, const char* what) {
    const auto start = std::chrono::steady_clock::now();
    auto pause = std::chrono::microseconds(20);
    ncclResult_t state = rc;
    while (rc == ncclInProgress || (rc == ncclSuccess && state == ncclInProgress)) {
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_s_.load()) {
        abort_comm();
        fail("dist", "{} ({}) was still in progress after {:.0f} s, more than --ddp_timeout {:.0f}: another rank "
                     "stopped responding; communicator aborted, ending this job", call, what, waited, timeout_s_.load());
      }
      std::this_thread::sleep_for(pause);
      pause = std::min<std::chrono::microseconds>(2 * pause, std::chrono::milliseconds(1));
      std::lock_guard<std::mutex> lock(nccl_mu_);
      SFT_CHECK(!aborted_, "nccl", "{} ({}): the communicator was aborted while it was in progress", call, what);
      rc = ncclCommGetAsyncError(comm_, &state);
    }
    if (rc == ncclSuccess && state == ncclSuccess) return;
    const ncclResult_t err = rc != ncclSuccess ? rc : state;
    std::string detail;
    {
      std::lock_guard<std::mutex> lock(nccl_mu_);
      const char* last = comm_ && !aborted_ ? ncclGetLastError(comm_) : nullptr;
      detail = last ? last : "";
    }
    if (comm_) abort_comm();
    fail("nccl", "{} ({}) failed: {}{}{}; communicator aborted", call, what, ncclGetErrorString(err),
         detail.empty() ? "" : ": " + detail,
         err == ncclSystemError || err == ncclRemoteError ? " (a rank may have died; see its error above)" : "");
  }

  void abort_comm() {
    std::lock_guard<std::mutex> lock(nccl_mu_);
    if (aborted_) return;
    ncclCommAbort(comm_);
    aborted_ = true;
  }

  // The watchdog thread: collectives complete in stream order, so the oldest incomplete one is
  // the front of inflight_. A NCCL error or one older than the timeout aborts the communicator
  // (which unblocks the kernels waiting on a dead peer) and ends the process.
  void watch() {
    cudaSetDevice(device_);
    std::unique_lock<std::mutex> lock(wd_mu_);
    for (;;) {
      const double timeout = timeout_s_.load();
      const auto period = std::chrono::duration<double>(std::min(1.0, std::max(0.01, timeout / 4)));
      if (wd_cv_.wait_for(lock, period, [this] { return wd_stop_; })) return;
      while (!inflight_.empty() && cudaEventQuery(inflight_.front().done) == cudaSuccess) {
        cudaEventDestroy(inflight_.front().done);
        inflight_.pop_front();
      }
      ncclResult_t async = ncclSuccess, rc = ncclSuccess;
      {
        std::lock_guard<std::mutex> nccl_lock(nccl_mu_);
        if (aborted_) return;  // the compute thread's settle() ended it and is reporting
        rc = ncclCommGetAsyncError(comm_, &async);
      }
      std::string why;
      if (rc != ncclSuccess) why = fmt::format("[dist] ncclCommGetAsyncError failed: {}", ncclGetErrorString(rc));
      else if (async != ncclSuccess && async != ncclInProgress)
        why = fmt::format("[dist] NCCL reports an error: {} (a rank may have died; see its error above); ending "
                          "this job", ncclGetErrorString(async));
      else if (!inflight_.empty()) {
        const double waited =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - inflight_.front().issued).count();
        if (waited > timeout)
          why = CollectiveWatchdog::message(inflight_.front().op, inflight_.front().what, waited, timeout);
      }
      if (why.empty()) continue;
      std::fflush(stdout);
      std::fprintf(stderr, "%serror: %s\n", rank_prefix().c_str(), why.c_str());
      std::fflush(stderr);
      // Abort and end the process holding the lock, so that no call of the compute thread reaches
      // the aborted (freed) communicator in between.
      nccl_mu_.lock();
      if (!aborted_) ncclCommAbort(comm_);
      std::_Exit(1);  // no destructors: they would wait on the aborted work
    }
  }

  Backend& be_;
  std::unique_ptr<Comm> host_;
  cudaStream_t compute_ = nullptr, stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
  std::mutex nccl_mu_;   // held by every call on comm_ (the compute thread's and the watchdog's)
  bool aborted_ = false;  // comm_ aborted or released (under nccl_mu_)
  int64_t next_id_ = 0;
  std::unordered_map<int64_t, cudaEvent_t> pending_;
  // The watchdog (started when there are several ranks).
  struct Inflight {
    cudaEvent_t done;
    std::chrono::steady_clock::time_point issued;
    const char* op;    // a literal
    std::string what;  // the caller's name may not outlive the call
  };
  int device_ = 0;
  std::atomic<double> timeout_s_{1800.0};
  std::mutex wd_mu_;
  std::condition_variable wd_cv_;
  bool wd_stop_ = false;
  std::deque<Inflight> inflight_;
  std::thread watchdog_;
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(Backend& backend, std::unique_ptr<Comm> host) {
  return std::make_unique<NcclComm>(backend, std::move(host));
}

}  // namespace sft
