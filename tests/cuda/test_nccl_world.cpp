// NCCL in a world of one GPU (issue 12 item 7): the Comm GPU ranks use, built as sft builds it
// (MPI bootstrap: rank 0's ncclUniqueId broadcast, the non-blocking communicator), checked on
// device buffers poisoned with NaN first: all-gather, reduce-scatter, all-reduce (sum, max) and
// broadcast leave a one-rank world's results (the input, moved into the output), in fp32 and bf16,
// and the host scalars pass through. Skips, saying why, without a GPU or without MPI and NCCL in
// the build. tools/gpu_check.sh runs it under `mpirun -np 1` (or as an MPI singleton). The same
// world also splits into hybrid_shard's groups (split_by_node: ncclCommSplit), each of one rank.
// NcclSplit checks those groups across ranks: under `mpirun -np N` (N >= 2, a GPU per rank, e.g.
// `mpirun -np 4 test_cuda --gtest_filter='NcclSplit.*'`), else it skips saying why. Each process
// makes one MPI world at most (MPI starts once): each case skips when launched for the other.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <cuda_runtime.h>

#include "backend/backend.h"
#include "core/dtype.h"
#include "dist/comm.h"
#include "dist/world.h"

namespace sft {
namespace {

// v in new GPU memory (freed by the caller's dealloc, or at the end of the test process).
Tensor to_device(Backend& gpu, const std::vector<float>& v) {
  Tensor t(gpu.alloc(v.size() * 4), DType::f32, {int64_t(v.size())}, Device::cuda);
  gpu.copy(t.data, v.data(), v.size() * 4);
  return t;
}

// t's values on the host, after every collective issued on the backend's stream has finished.
std::vector<float> to_host(Backend& gpu, Tensor t) {
  gpu.synchronize();
  std::vector<float> h(size_t(t.numel()));
  gpu.copy(h.data(), t.data, h.size() * 4);
  return h;
}

TEST(NcclWorld, OneRankCollectivesMoveTheDataAsOneRankShould) {
  if (const std::string why = cuda_unavailable_reason(); !why.empty()) GTEST_SKIP() << "no GPU: " << why;
  if (!mpi_built() || !nccl_built())
    GTEST_SKIP() << "no NCCL world in this build: MPI " << (mpi_built() ? "built" : no_mpi_reason()) << ", NCCL "
                 << (nccl_built() ? "built" : "not built");
  if (const LaunchInfo launch = detect_launch(); launch.size > 1)
    GTEST_SKIP() << "a one-rank world, launched here as rank " << launch.rank << " of " << launch.size
                 << " (NcclSplit is the case for several ranks)";
  auto gpu = create_backend("cuda");
  const std::unique_ptr<Comm> comm = make_nccl_world_comm(*gpu);
  comm->set_timeout(60);
  ASSERT_EQ(comm->size(), 1);
  ASSERT_EQ(comm->rank(), 0);
  constexpr int64_t n = (int64_t(1) << 20) + 3;  // several NCCL chunks, not a multiple of anything
  std::vector<float> x(n), nan(n, std::numeric_limits<float>::quiet_NaN());
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = float(i % 1000) * 0.25f - 100.0f;
  auto device = [&](const std::vector<float>& v) { return to_device(*gpu, v); };
  auto host = [&](Tensor t) { return to_host(*gpu, t); };
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
  {  // hybrid_shard's groups of a one-rank world: ncclCommSplit into a node and an across group of one
    NodeComms groups = split_by_node(*comm);
    ASSERT_EQ(groups.node->size(), 1);
    ASSERT_EQ(groups.across->size(), 1);
    EXPECT_TRUE(groups.first);
    const Tensor buf = device(x), out = device(nan);
    groups.node->wait(groups.node->reduce_scatter(out, buf, ReduceOp::sum, "check split reduce_scatter"));
    groups.across->wait(groups.across->all_reduce(out, ReduceOp::sum, "check split all_reduce"));
    EXPECT_EQ(host(out), x) << "reduce_scatter on the node, then all_reduce across";
    gpu->dealloc(buf.data);
    gpu->dealloc(out.data);
  }  // the groups are destroyed (finalized) before the world, as the store's are
  gpu->dealloc(in.data);
}

// hybrid_shard's groups over N >= 2 GPU ranks (split_by_node: MPI splits the host Comm, NCCL the
// communicator with ncclCommSplit): the groups have the launcher's shape (L ranks per node, N / L
// nodes), NCCL's ranks are the host's (a device all-gather on the node gives the world ranks in the
// host's order), and the hybrid gradient path (reduce-scatter on the node, then all-reduce of the
// block across nodes) sums every rank's contribution. Not run yet: the machines lent here have one GPU.
TEST(NcclSplit, HybridGroupsOverSeveralGpuRanks) {
  if (const std::string why = cuda_unavailable_reason(); !why.empty()) GTEST_SKIP() << "no GPU: " << why;
  if (!mpi_built() || !nccl_built())
    GTEST_SKIP() << "no NCCL world in this build: MPI " << (mpi_built() ? "built" : no_mpi_reason()) << ", NCCL "
                 << (nccl_built() ? "built" : "not built");
  const LaunchInfo launch = detect_launch();
  if (launch.size < 2)
    GTEST_SKIP() << "needs >= 2 GPU ranks: run under mpirun -np N (N >= 2, one GPU per rank), e.g. mpirun -np 2 "
                    "test_cuda --gtest_filter='NcclSplit.*'; launched here as "
                 << (launch.launcher.empty() ? "one process" : launch.launcher + " with one rank");
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus < launch.local_size)
    GTEST_SKIP() << "needs a GPU per rank: " << launch.local_size << " ranks on this node, " << gpus << " GPU(s)";
  auto gpu = create_backend("cuda", launch.local_rank);
  const std::unique_ptr<Comm> world = make_nccl_world_comm(*gpu);
  world->set_timeout(120);
  const int N = world->size(), me = world->rank();
  ASSERT_EQ(N, launch.size);
  {
    NodeComms groups = split_by_node(*world);
    Comm& node = *groups.node;
    Comm& across = *groups.across;
    const int L = node.size();
    EXPECT_EQ(L, launch.local_size) << "the node group against the launcher's ranks per node";
    ASSERT_EQ(N % L, 0);
    EXPECT_EQ(across.size(), N / L);
    EXPECT_EQ(groups.first, node.any(me == 0, "check first"));
    // The host's view of each group: its members' world ranks, in group rank order.
    std::vector<double> node_ranks(static_cast<size_t>(L)), across_ranks(static_cast<size_t>(across.size()));
    const double mine = me;
    node.all_gather_host(&mine, 1, node_ranks.data(), "check node ranks");
    across.all_gather_host(&mine, 1, across_ranks.data(), "check across ranks");
    constexpr int64_t n = (int64_t(1) << 16) + 5;
    auto device = [&](const std::vector<float>& v) { return to_device(*gpu, v); };
    auto host = [&](Tensor t) { return to_host(*gpu, t); };
    const float nan = std::numeric_limits<float>::quiet_NaN();
    {  // NCCL's node ranks are the host's: block r of the gather is the world rank the host lists at r
      const Tensor in = device(std::vector<float>(size_t(n), float(me)));
      const Tensor out = device(std::vector<float>(size_t(L) * size_t(n), nan));
      node.wait(node.all_gather(out, in, "check node all_gather"));
      const std::vector<float> got = host(out);
      for (int r = 0; r < L; ++r)
        EXPECT_EQ(got[size_t(r) * size_t(n) + size_t(n - 1)], float(node_ranks[size_t(r)])) << "node block " << r;
      gpu->dealloc(in.data);
      gpu->dealloc(out.data);
    }
    {  // hybrid's gradient path: every rank contributes (world rank + 1) to every element
      const Tensor grads = device(std::vector<float>(size_t(L) * size_t(n), float(me + 1)));
      const Tensor block = device(std::vector<float>(size_t(n), nan));
      node.wait(node.reduce_scatter(block, grads, ReduceOp::sum, "check grads"));
      across.wait(across.all_reduce(block, ReduceOp::sum, "check grads"));
      const std::vector<float> got = host(block);
      const float want = float(N) * float(N + 1) / 2;
      EXPECT_EQ(got.front(), want);
      EXPECT_EQ(got.back(), want);
      gpu->dealloc(grads.data);
      gpu->dealloc(block.data);
    }
    {  // across: the max of the world ranks is the last node's rank with this local place
      const Tensor v = device(std::vector<float>(size_t(n), float(me)));
      across.wait(across.all_reduce(v, ReduceOp::max, "check across max"));
      EXPECT_EQ(host(v).back(), float(*std::max_element(across_ranks.begin(), across_ranks.end())));
      gpu->dealloc(v.data);
    }
    world->barrier("check split end");
  }  // the groups are destroyed (finalized) before the world, as the store's are
}

}  // namespace
}  // namespace sft
