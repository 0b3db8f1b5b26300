// NCCL in a world of one GPU (issue 12 item 7): the Comm GPU ranks use, built as sft builds it
// (MPI bootstrap: rank 0's ncclUniqueId broadcast, the non-blocking communicator), checked on
// device buffers poisoned with NaN first: all-gather, reduce-scatter, all-reduce (sum, max) and
// broadcast leave a one-rank world's results (the input, moved into the output), in fp32 and bf16,
// and the host scalars pass through. Skips, saying why, without a GPU or without MPI and NCCL in
// the build. tools/gpu_check.sh runs it under `mpirun -np 1` (or as an MPI singleton).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "backend/backend.h"
#include "core/dtype.h"
#include "dist/comm.h"
#include "dist/world.h"

namespace sft {
namespace {

TEST(NcclWorld, OneRankCollectivesMoveTheDataAsOneRankShould) {
  if (const std::string why = cuda_unavailable_reason(); !why.empty()) GTEST_SKIP() << "no GPU: " << why;
  if (!mpi_built() || !nccl_built())
    GTEST_SKIP() << "no NCCL world in this build: MPI " << (mpi_built() ? "built" : no_mpi_reason()) << ", NCCL "
                 << (nccl_built() ? "built" : "not built");
  auto gpu = create_backend("cuda");
  const std::unique_ptr<Comm> comm = make_nccl_world_comm(*gpu);
  comm->set_timeout(60);
  ASSERT_EQ(comm->size(), 1);
  ASSERT_EQ(comm->rank(), 0);
  constexpr int64_t n = (int64_t(1) << 20) + 3;  // several NCCL chunks, not a multiple of anything
  std::vector<float> x(n), nan(n, std::numeric_limits<float>::quiet_NaN()), back(n);
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = float(i % 1000) * 0.25f - 100.0f;
  auto device = [&](const std::vector<float>& v) {
    Tensor t(gpu->alloc(v.size() * 4), DType::f32, {int64_t(v.size())}, Device::cuda);
    gpu->copy(t.data, v.data(), v.size() * 4);
    return t;
  };
  auto host = [&](Tensor t) {
    gpu->synchronize();
    std::vector<float> h(size_t(t.numel()));
    gpu->copy(h.data(), t.data, h.size() * 4);
    return h;
  };
  const Tensor in = device(x);
  {
    const Tensor out = device(nan);
    comm->wait(comm->all_gather(out, in, "check all_gather"));
    EXPECT_EQ(host(out), x) << "all_gather";
    gpu->copy(out.data, nan.data(), n * 4);
    comm->wait(comm->reduce_scatter(out, in, ReduceOp::sum, "check reduce_scatter"));
    EXPECT_EQ(host(out), x) << "reduce_scatter";
    gpu->dealloc(out.data);
  }
  for (const ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
    const Tensor buf = device(x);
    comm->wait(comm->all_reduce(buf, op, "check all_reduce"));
    EXPECT_EQ(host(buf), x) << "all_reduce " << (op == ReduceOp::sum ? "sum" : "max");
    gpu->dealloc(buf.data);
  }
  {
    const Tensor buf = device(x);
    comm->wait(comm->broadcast(buf, 0, "check broadcast"));
    EXPECT_EQ(host(buf), x) << "broadcast";
    gpu->dealloc(buf.data);
  }
  {  // bf16, as the bf16 gathers and reduces move it
    std::vector<uint16_t> x16(n), got(n);
    convert_f32_to_bf16(x.data(), x16.data(), size_t(n));
    Tensor in16(gpu->alloc(n * 2), DType::bf16, {n}, Device::cuda), out16(gpu->alloc(n * 2), DType::bf16, {n}, Device::cuda);
    gpu->copy(in16.data, x16.data(), n * 2);
    comm->wait(comm->all_gather(out16, in16, "check all_gather bf16"));
    gpu->synchronize();
    gpu->copy(got.data(), out16.data, n * 2);
    EXPECT_EQ(got, x16) << "all_gather bf16";
    gpu->dealloc(in16.data);
    gpu->dealloc(out16.data);
  }
  double v[2] = {1.5, -2.0};
  comm->all_reduce_host(v, 2, ReduceOp::sum, "check host");
  EXPECT_EQ(v[0], 1.5);
  EXPECT_EQ(v[1], -2.0);
  double all[2] = {0, 0};
  comm->all_gather_host(v, 2, all, "check host gather");
  EXPECT_EQ(all[0], 1.5);
  comm->barrier("check barrier");
  gpu->dealloc(in.data);
}

}  // namespace
}  // namespace sft
