// TimedComm: a Comm that forwards every call to another and adds up the time its caller spends
// inside them (issuing and waiting on tensor collectives, the blocking host collectives and
// barriers): the exposed communication of a step, what overlapping it with compute did not hide.
// `sft bench` under mpirun reports it as a share of the step time. Its sub-worlds (hybrid_shard's
// node and across-nodes groups) are timed into the same sum.
#pragma once
#include <chrono>
#include <memory>

#include "dist/comm.h"

namespace sft {

class TimedComm final : public Comm {
  template <class F>
  auto timed(F&& f) {  // f's result, its time added to *sum_
    const auto t0 = std::chrono::steady_clock::now();
    auto r = f();
    *sum_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }
  // A sub-world of `parent`'s inner Comm, timed into parent's sum (which outlives it).
  TimedComm(std::unique_ptr<Comm> sub, TimedComm& parent) : owned_(std::move(sub)), c_(*owned_), sum_(parent.sum_) {}
  std::unique_ptr<Comm> owned_;
  Comm& c_;
  double seconds_ = 0.0;
  double* sum_ = &seconds_;

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
  std::unique_ptr<Comm> split_node(const char* what) override {
    return std::unique_ptr<Comm>(new TimedComm(c_.split_node(what), *this));
  }
  std::unique_ptr<Comm> split(int color, int key, const char* what) override {
    return std::unique_ptr<Comm>(new TimedComm(c_.split(color, key, what), *this));
  }

  double seconds() const { return *sum_; }  // inside the inner Comm (and sub-worlds) since construction / reset
  void reset() { *sum_ = 0.0; }
};

}  // namespace sft
