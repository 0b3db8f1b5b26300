// ThreadWorld: N ranks as threads of one process, meeting at a generation-counted barrier for
// every collective. Each rank publishes its input, all check they called the same collective,
// each computes its own result from every rank's input, and a second barrier keeps inputs alive
// until everyone has read them. A split makes a group of some ranks with its own rendezvous
// (simulated nodes: ThreadWorld's ranks_per_node). Host fp32 / bf16 / double data only: it exists
// to test collective order and the sharded stores' arithmetic.
#include <algorithm>
#include <cstring>
#include <condition_variable>
#include <map>
#include <mutex>
#include <tuple>

#include <fmt/format.h>

#include "dist/comm.h"

namespace sft {

struct ThreadWorld::Shared {
  int size = 0;
  std::string label;          // "" for the world; a sub-world's name (split's `what`)
  Shared* root = nullptr;     // the world: logs and the sub-world registry live there
  int ranks_per_node = 0;     // the world's simulated nodes (0: one node)
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  int64_t generation = 0;
  std::vector<std::string> op;        // (size) the collective each rank is in
  std::vector<const void*> input;     // (size) its input
  std::vector<std::vector<std::string>> logs;  // (world size, root only) by world rank
  // Sub-worlds (root only, under mu): (the parent's Shared, its split count, color) -> the group.
  std::map<std::tuple<const Shared*, int64_t, int>, std::shared_ptr<Shared>> subs;

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
  // rank in the group s; world_rank in the root world. keep holds a sub-world's state alive.
  ThreadComm(ThreadWorld::Shared& s, int rank, int world_rank, std::shared_ptr<ThreadWorld::Shared> keep = {})
      : keep_(std::move(keep)), s_(s), rank_(rank), world_rank_(world_rank) {}
  int rank() const override { return rank_; }
  int size() const override { return s_.size; }

  CommRequest all_reduce(Tensor buf, ReduceOp op, const char* what) override {
    const int64_t n = buf.numel();
    run("all_reduce", what, buf, [&] { return reduce(buf.dtype, 0, n, op); }, buf);
    return {};
  }
  CommRequest all_gather(Tensor out, Tensor in, const char* what) override {
    const int64_t n = in.numel();
    SFT_CHECK(out.numel() == n * size() && out.dtype == in.dtype, "comm", "{}: all_gather of {} {} into {} {}", what, n,
              dtype_name(in.dtype), out.numel(), dtype_name(out.dtype));
    run("all_gather", what, in, [&] {
      const size_t bytes = in.nbytes();
      std::vector<unsigned char> r(bytes * size_t(size()));
      for (int q = 0; q < size(); ++q)
        std::copy_n(static_cast<const unsigned char*>(s_.input[size_t(q)]), bytes, r.begin() + q * int64_t(bytes));
      return r;
    }, out);
    return {};
  }
  CommRequest reduce_scatter(Tensor out, Tensor in, ReduceOp op, const char* what) override {
    const int64_t n = out.numel();
    SFT_CHECK(in.numel() == n * size() && out.dtype == in.dtype, "comm", "{}: reduce_scatter of {} {} into {} {}",
              what, in.numel(), dtype_name(in.dtype), n, dtype_name(out.dtype));
    run("reduce_scatter", what, in, [&] { return reduce(in.dtype, rank_ * n, n, op); }, out);
    return {};
  }
  CommRequest broadcast(Tensor buf, int root, const char* what) override {
    run("broadcast", what, buf, [&] {
      const auto* src = static_cast<const unsigned char*>(s_.input[size_t(root)]);
      return std::vector<unsigned char>(src, src + buf.nbytes());
    }, buf);
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

  std::unique_ptr<Comm> split_node(const char* what) override {
    const int per = s_.root->ranks_per_node;
    return split(per > 0 ? world_rank_ / per : 0, rank_, what);
  }
  // Every rank's (color, key) gathered; the group with this rank's color meets in a Shared that
  // the first of its members to get here registers in the world's registry.
  std::unique_ptr<Comm> split(int color, int key, const char* what) override {
    SFT_CHECK(color >= 0, "comm", "{}: split with color {}, expected >= 0", what, color);
    const double mine[3] = {double(color), double(key), double(world_rank_)};
    std::vector<double> all(size_t(3 * size()));
    all_gather_host(mine, 3, all.data(), fmt::format("split {}", what).c_str());
    std::vector<std::tuple<double, int, int>> members;  // (key, rank here, world rank)
    for (int q = 0; q < size(); ++q)
      if (all[size_t(3 * q)] == double(color))
        members.emplace_back(all[size_t(3 * q + 1)], q, int(all[size_t(3 * q + 2)]));
    std::sort(members.begin(), members.end());
    int index = 0;
    while (std::get<1>(members[size_t(index)]) != rank_) ++index;
    std::shared_ptr<ThreadWorld::Shared> group;
    {
      std::lock_guard lock(s_.root->mu);
      std::shared_ptr<ThreadWorld::Shared>& slot = s_.root->subs[{&s_, splits_, color}];
      if (!slot) {
        slot = std::make_shared<ThreadWorld::Shared>();
        slot->size = int(members.size());
        slot->label = what;
        slot->root = s_.root;
        slot->op.resize(members.size());
        slot->input.resize(members.size());
      }
      group = slot;
    }
    ++splits_;
    return std::make_unique<ThreadComm>(*group, index, world_rank_, group);
  }

 private:
  // Publish input, meet, check every rank is in the same collective.
  void publish(const char* op, const char* what, const void* input) {
    const std::string name =
        s_.label.empty() ? fmt::format("{}:{}", op, what) : fmt::format("{}[{}]:{}", op, s_.label, what);
    {
      std::lock_guard lock(s_.mu);
      s_.op[size_t(rank_)] = name;
      s_.input[size_t(rank_)] = input;
    }
    {
      std::lock_guard lock(s_.root->mu);
      s_.root->logs[size_t(world_rank_)].push_back(name);
    }
    s_.barrier();
    for (int q = 0; q < size(); ++q)
      SFT_CHECK(s_.op[size_t(q)] == name, "comm", "rank {} called {} while rank {} called {}", rank_, name, q,
                s_.op[size_t(q)]);
  }
  // Host fp32 or bf16 tensors; the result is computed as bytes of out's dtype.
  template <class Compute>
  void run(const char* op, const char* what, const Tensor& input, Compute&& compute, const Tensor& out) {
    SFT_CHECK(input.dtype == DType::f32 || input.dtype == DType::bf16, "comm", "{}: ThreadWorld carries fp32 or bf16, got {}",
              what, dtype_name(input.dtype));
    publish(op, what, input.data);
    const std::vector<unsigned char> r = compute();
    s_.barrier();  // every rank has read every input
    SFT_CHECK(r.size() == out.nbytes(), "comm", "{}: {} bytes of result for {}", what, r.size(), out.nbytes());
    std::copy(r.begin(), r.end(), static_cast<unsigned char*>(out.data));
  }
  // Elements [offset, offset + n) of op over the ranks' inputs in rank order; bf16 adds in fp32
  // and rounds each partial result to bf16 (as MPI's and NCCL's bf16 reductions do).
  std::vector<unsigned char> reduce(DType dt, int64_t offset, int64_t n, ReduceOp op) {
    auto combine = [op](float a, float b) { return op == ReduceOp::sum ? a + b : std::max(a, b); };
    std::vector<unsigned char> r(size_t(n) * dtype_size(dt));
    for (int64_t i = 0; i < n; ++i) {
      if (dt == DType::f32) {
        float acc = static_cast<const float*>(s_.input[0])[offset + i];
        for (int q = 1; q < size(); ++q) acc = combine(acc, static_cast<const float*>(s_.input[size_t(q)])[offset + i]);
        std::memcpy(r.data() + i * 4, &acc, 4);
      } else {
        uint16_t acc = static_cast<const uint16_t*>(s_.input[0])[offset + i];
        for (int q = 1; q < size(); ++q)
          acc = f32_to_bf16(combine(bf16_to_f32(acc), bf16_to_f32(static_cast<const uint16_t*>(s_.input[size_t(q)])[offset + i])));
        std::memcpy(r.data() + i * 2, &acc, 2);
      }
    }
    return r;
  }
  std::shared_ptr<ThreadWorld::Shared> keep_;
  ThreadWorld::Shared& s_;
  int rank_, world_rank_;
  int64_t splits_ = 0;  // splits of s_ this rank took part in (the same count on every member)
};

}  // namespace

ThreadWorld::ThreadWorld(int size, int ranks_per_node) : shared_(std::make_unique<Shared>()) {
  SFT_CHECK(size >= 1 && ranks_per_node >= 0 && (ranks_per_node == 0 || size % ranks_per_node == 0), "comm",
            "a world of {} ranks in nodes of {}", size, ranks_per_node);
  shared_->size = size;
  shared_->root = shared_.get();
  shared_->ranks_per_node = ranks_per_node;
  shared_->op.resize(size_t(size));
  shared_->input.resize(size_t(size));
  shared_->logs.resize(size_t(size));
  for (int r = 0; r < size; ++r) comms_.push_back(std::make_unique<ThreadComm>(*shared_, r, r));
}

ThreadWorld::~ThreadWorld() = default;
Comm& ThreadWorld::comm(int rank) { return *comms_.at(size_t(rank)); }
const std::vector<std::string>& ThreadWorld::log(int rank) const { return shared_->logs.at(size_t(rank)); }

}  // namespace sft
