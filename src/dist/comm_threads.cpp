// ThreadWorld: N ranks as threads of one process, meeting at a generation-counted barrier for
// every collective. Each rank publishes its input, all check they called the same collective,
// each computes its own result from every rank's input, and a second barrier keeps inputs alive
// until everyone has read them. Host fp32 / double data only: it exists to test collective order.
#include <algorithm>
#include <condition_variable>
#include <mutex>

#include <fmt/format.h>

#include "dist/comm.h"

namespace sft {

struct ThreadWorld::Shared {
  int size = 0;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  int64_t generation = 0;
  std::vector<std::string> op;        // (size) the collective each rank is in
  std::vector<const void*> input;     // (size) its input
  std::vector<std::vector<std::string>> logs;

  void barrier() {
    std::unique_lock lock(mu);
    const int64_t gen = generation;
    if (++arrived == size) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != gen; });
    }
  }
};

namespace {

class ThreadComm final : public Comm {
 public:
  ThreadComm(ThreadWorld::Shared& s, int rank) : s_(s), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return s_.size; }

  CommRequest all_reduce(Tensor buf, ReduceOp op, const char* what) override {
    const int64_t n = buf.numel();
    run("all_reduce", what, buf.f32(), [&] {
      std::vector<float> r(static_cast<size_t>(n));
      reduce_into(r.data(), 0, n, op);
      return r;
    }, buf.f32());
    return {};
  }
  CommRequest all_gather(Tensor out, Tensor in, const char* what) override {
    const int64_t n = in.numel();
    SFT_CHECK(out.numel() == n * size(), "comm", "{}: all_gather of {} into {}", what, n, out.numel());
    run("all_gather", what, in.f32(), [&] {
      std::vector<float> r(static_cast<size_t>(n * size()));
      for (int q = 0; q < size(); ++q)
        std::copy_n(static_cast<const float*>(s_.input[size_t(q)]), n, r.begin() + q * n);
      return r;
    }, out.f32());
    return {};
  }
  CommRequest reduce_scatter(Tensor out, Tensor in, ReduceOp op, const char* what) override {
    const int64_t n = out.numel();
    SFT_CHECK(in.numel() == n * size(), "comm", "{}: reduce_scatter of {} into {}", what, in.numel(), n);
    run("reduce_scatter", what, in.f32(), [&] {
      std::vector<float> r(static_cast<size_t>(n));
      reduce_into(r.data(), rank_ * n, n, op);
      return r;
    }, out.f32());
    return {};
  }
  CommRequest broadcast(Tensor buf, int root, const char* what) override {
    const int64_t n = buf.numel();
    run("broadcast", what, buf.f32(), [&] {
      const float* src = static_cast<const float*>(s_.input[size_t(root)]);
      return std::vector<float>(src, src + n);
    }, buf.f32());
    return {};
  }
  void wait(CommRequest) override {}

  void all_reduce_host(double* v, int n, ReduceOp op, const char* what) override {
    std::vector<double> r(static_cast<size_t>(n));
    publish("all_reduce_host", what, v);
    for (int i = 0; i < n; ++i) {
      double acc = static_cast<const double*>(s_.input[0])[i];
      for (int q = 1; q < size(); ++q) {
        const double x = static_cast<const double*>(s_.input[size_t(q)])[i];
        acc = op == ReduceOp::sum ? acc + x : std::max(acc, x);
      }
      r[size_t(i)] = acc;
    }
    s_.barrier();
    std::copy(r.begin(), r.end(), v);
  }
  void all_gather_host(const double* in, int n, double* out, const char* what) override {
    publish("all_gather_host", what, in);
    for (int q = 0; q < size(); ++q)
      std::copy_n(static_cast<const double*>(s_.input[size_t(q)]), n, out + q * n);
    s_.barrier();
  }
  void barrier(const char* what) override {
    publish("barrier", what, nullptr);
    s_.barrier();
  }

 private:
  // Publish input, meet, check every rank is in the same collective.
  void publish(const char* op, const char* what, const void* input) {
    const std::string name = fmt::format("{}:{}", op, what);
    {
      std::lock_guard lock(s_.mu);
      s_.op[size_t(rank_)] = name;
      s_.input[size_t(rank_)] = input;
      s_.logs[size_t(rank_)].push_back(name);
    }
    s_.barrier();
    for (int q = 0; q < size(); ++q)
      SFT_CHECK(s_.op[size_t(q)] == name, "comm", "rank {} called {} while rank {} called {}", rank_, name, q,
                s_.op[size_t(q)]);
  }
  template <class Compute>
  void run(const char* op, const char* what, const float* input, Compute&& compute, float* out) {
    publish(op, what, input);
    const std::vector<float> r = compute();
    s_.barrier();  // every rank has read every input
    std::copy(r.begin(), r.end(), out);
  }
  void reduce_into(float* r, int64_t offset, int64_t n, ReduceOp op) {
    for (int64_t i = 0; i < n; ++i) {
      float acc = static_cast<const float*>(s_.input[0])[offset + i];
      for (int q = 1; q < size(); ++q) {
        const float x = static_cast<const float*>(s_.input[size_t(q)])[offset + i];
        acc = op == ReduceOp::sum ? acc + x : std::max(acc, x);
      }
      r[i] = acc;
    }
  }
  ThreadWorld::Shared& s_;
  int rank_;
};

}  // namespace

ThreadWorld::ThreadWorld(int size) : shared_(std::make_unique<Shared>()) {
  SFT_CHECK(size >= 1, "comm", "a world of {} ranks", size);
  shared_->size = size;
  shared_->op.resize(size_t(size));
  shared_->input.resize(size_t(size));
  shared_->logs.resize(size_t(size));
  for (int r = 0; r < size; ++r) comms_.push_back(std::make_unique<ThreadComm>(*shared_, r));
}

ThreadWorld::~ThreadWorld() = default;
Comm& ThreadWorld::comm(int rank) { return *comms_.at(size_t(rank)); }
const std::vector<std::string>& ThreadWorld::log(int rank) const { return shared_->logs.at(size_t(rank)); }

}  // namespace sft
