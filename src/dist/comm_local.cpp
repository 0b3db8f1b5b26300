// The world of one: what every single-process run uses. Collectives have nothing to combine, so a
// reduction is the identity and a gather is a copy; wait() has nothing to wait for; a split is
// another world of one.
#include <algorithm>

#include "dist/comm.h"

namespace sft {

namespace {

class LocalComm final : public Comm {
 public:
  explicit LocalComm(Backend& be) : be_(be) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  CommRequest all_reduce(Tensor, ReduceOp, const char*) override { return {}; }
  CommRequest all_gather(Tensor out, Tensor in, const char* what) override { return copy(out, in, what); }
  CommRequest reduce_scatter(Tensor out, Tensor in, ReduceOp, const char* what) override { return copy(out, in, what); }
  CommRequest broadcast(Tensor, int root, const char* what) override {
    SFT_CHECK(root == 0, "comm", "{}: broadcast from rank {} in a world of one", what, root);
    return {};
  }
  void wait(CommRequest) override {}
  void all_reduce_host(double*, int, ReduceOp, const char*) override {}
  void all_gather_host(const double* in, int n, double* out, const char*) override { std::copy(in, in + n, out); }
  void barrier(const char*) override {}
  std::unique_ptr<Comm> split_node(const char*) override { return std::make_unique<LocalComm>(be_); }
  std::unique_ptr<Comm> split(int, int, const char*) override { return std::make_unique<LocalComm>(be_); }

 private:
  CommRequest copy(Tensor out, Tensor in, const char* what) {
    SFT_CHECK(out.nbytes() == in.nbytes(), "comm", "{}: {} bytes into {}", what, in.nbytes(), out.nbytes());
    if (out.data != in.data) be_.copy(out.data, in.data, in.nbytes());
    return {};
  }
  Backend& be_;
};

}  // namespace

std::unique_ptr<Comm> make_local_comm(Backend& backend) { return std::make_unique<LocalComm>(backend); }

}  // namespace sft
