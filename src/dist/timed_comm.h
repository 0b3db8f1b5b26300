// TimedComm: a Comm that forwards every call to another and adds up the time its caller spends
// inside them (issuing and waiting on tensor collectives, the blocking host collectives and
// barriers): the exposed communication of a step, what overlapping it with compute did not hide.
// `sft bench` under mpirun reports it as a share of the step time.
#pragma once
#include <chrono>

#include "dist/comm.h"

namespace sft {

class TimedComm final : public Comm {
  template <class F>
  auto timed(F&& f) {  // f's result, its time added to seconds_
    const auto t0 = std::chrono::steady_clock::now();
    auto r = f();
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }
  Comm& c_;
  double seconds_ = 0.0;

 public:
  explicit TimedComm(Comm& inner) : c_(inner) {}
  int rank() const override { return c_.rank(); }
  int size() const override { return c_.size(); }
  CommRequest all_reduce(Tensor buf, ReduceOp op, const char* what) override {
    return timed([&] { return c_.all_reduce(buf, op, what); });
  }
  CommRequest all_gather(Tensor out, Tensor in, const char* what) override {
    return timed([&] { return c_.all_gather(out, in, what); });
  }
  CommRequest reduce_scatter(Tensor out, Tensor in, ReduceOp op, const char* what) override {
    return timed([&] { return c_.reduce_scatter(out, in, op, what); });
  }
  CommRequest broadcast(Tensor buf, int root, const char* what) override {
    return timed([&] { return c_.broadcast(buf, root, what); });
  }
  void wait(CommRequest request) override {
    timed([&] { return (c_.wait(request), 0); });
  }
  void all_reduce_host(double* v, int n, ReduceOp op, const char* what) override {
    timed([&] { return (c_.all_reduce_host(v, n, op, what), 0); });
  }
  void all_gather_host(const double* in, int n, double* out, const char* what) override {
    timed([&] { return (c_.all_gather_host(in, n, out, what), 0); });
  }
  void barrier(const char* what) override {
    timed([&] { return (c_.barrier(what), 0); });
  }
  void set_timeout(double seconds) override { c_.set_timeout(seconds); }

  double seconds() const { return seconds_; }  // inside the inner Comm since construction / reset
  void reset() { seconds_ = 0.0; }
};

}  // namespace sft
