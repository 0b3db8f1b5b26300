// train_step() across ranks, on the in-process ThreadWorld: every rank issues the same collectives
// in the same order whatever its data (an empty micro-batch, one without targets, no eval data),
// the stop decision reaches every rank, and two replicated (DDP) ranks with one micro-batch each
// train like one process accumulating both micro-batches.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "backend/backend.h"
#include "dist/comm.h"
#include "dist/replicated_store.h"
#include "model/init.h"
#include "train/train_step.h"
#include "dist_test_util.h"
#include "../common/tiny_model.h"

namespace sft {

namespace {

using dist_test::make_batch;
using dist_test::run_ranks;

using test_common::tiny_config;  // tests/common/tiny_model.h

Batch empty_batch() { return Batch{}; }

// One rank: a replicated model on the world's comm, the same initial weights everywhere.
struct Rank {
  std::unique_ptr<Backend> be = create_backend("cpu");
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<AdamW> opt;
  Rank(Comm& comm) {
    model = std::make_unique<LlamaModel>(tiny_config(), *be, ModelOptions{},
                                         std::make_unique<ReplicatedParamStore>(tiny_config(), *be, comm));
    init_weights(*model, 7);
    opt = std::make_unique<AdamW>(*model, AdamWConfig{0.9f, 0.999f, 1e-8f, 0.01f});
  }
  std::vector<float> params() const {
    const float* p = model->params_flat().f32();
    return std::vector<float>(p, p + model->num_params());
  }
};

}  // namespace

TEST(TrainStep, RanksIssueTheSameCollectivesWhateverTheirData) {
  ThreadWorld world(2);
  std::vector<std::vector<float>> params(2);
  std::vector<int> stop(2);
  std::vector<EvalResult> eval(2);
  run_ranks(2, [&](int r) {
    Rank rank(world.comm(r));
    // rank 1's share of an epoch's end: no rows, then rows without a target
    const std::vector<Batch> micro = r == 0 ? std::vector<Batch>{make_batch(2, 8, 1), make_batch(2, 8, 2)}
                                            : std::vector<Batch>{empty_batch(), make_batch(1, 8, 3, false)};
    for (int s = 0; s < 2; ++s) {
      const StepResult res = train_step(*rank.model, *rank.opt, world.comm(r), micro, 1e-2, StepOptions{});
      EXPECT_FALSE(res.skipped) << res.skip_reason;
      EXPECT_EQ(res.targets, 2 * 2 * 7);  // rank 0's 4 rows × 7 targets, counted on both ranks
    }
    const std::vector<Batch> eval_batches = r == 0 ? std::vector<Batch>{make_batch(2, 8, 4)}
                                                   : std::vector<Batch>{empty_batch()};
    eval[size_t(r)] = evaluate(*rank.model, world.comm(r), eval_batches);
    stop[size_t(r)] = agree_to_stop(world.comm(r), r == 1 ? 10 : 0);  // only rank 1 saw a signal (SIGUSR1)
    params[size_t(r)] = rank.params();
  });
  EXPECT_EQ(world.log(0), world.log(1));
  // The step's reduction points, in order, around the backward's per-unit gradient reductions.
  const std::vector<std::string>& log = world.log(0);
  std::vector<std::string> points;
  for (const std::string& e : log)
    if (e.rfind("all_reduce_host:", 0) == 0) points.push_back(e.substr(16));
  const std::vector<std::string> step = {kStepTargets, kLossSum, kGradSumSquares, kFiniteCheck, kSkipDecision};
  std::vector<std::string> want = step;
  want.insert(want.end(), step.begin(), step.end());
  want.push_back("eval_loss_sum_and_targets");
  want.push_back("stop_decision");
  EXPECT_EQ(points, want);
  const int64_t grads_ready = std::count(log.begin(), log.end(), "all_reduce:grads_ready");
  // steps × units (embed, 2 layers, head): after each step's last micro-batch only (DDP's no_sync before it)
  EXPECT_EQ(grads_ready, 2 * (2 + 2));
  EXPECT_EQ(stop[0], 10);
  EXPECT_EQ(stop[1], 10);
  EXPECT_EQ(eval[0].targets, 14);
  EXPECT_EQ(eval[1].targets, 14);
  EXPECT_EQ(eval[0].loss, eval[1].loss);
  EXPECT_EQ(params[0], params[1]);  // replicated ranks stay identical
}

TEST(TrainStep, TwoReplicatedRanksTrainLikeOneProcessAccumulating) {
  const Batch a = make_batch(2, 8, 11), b = make_batch(3, 8, 12);
  // One process: both micro-batches in one step (gradient accumulation 2).
  auto be = create_backend("cpu");
  LlamaModel one(tiny_config(), *be);
  init_weights(one, 7);
  AdamW opt(one, AdamWConfig{0.9f, 0.999f, 1e-8f, 0.01f});
  const std::unique_ptr<Comm> local = make_local_comm(*be);
  std::vector<StepResult> want;
  for (int s = 0; s < 3; ++s) want.push_back(train_step(one, opt, *local, {a, b}, 1e-2, StepOptions{}));
  const std::vector<float> want_params(one.params_flat().f32(), one.params_flat().f32() + one.num_params());

  ThreadWorld world(2);
  std::vector<std::vector<StepResult>> got(2);
  std::vector<std::vector<float>> params(2);
  run_ranks(2, [&](int r) {
    Rank rank(world.comm(r));
    for (int s = 0; s < 3; ++s)
      got[size_t(r)].push_back(train_step(*rank.model, *rank.opt, world.comm(r), {r == 0 ? a : b}, 1e-2, StepOptions{}));
    params[size_t(r)] = rank.params();
  });
  for (int r = 0; r < 2; ++r)
    for (int s = 0; s < 3; ++s) {
      EXPECT_EQ(got[size_t(r)][size_t(s)].targets, want[size_t(s)].targets);
      // fp32 sums in another order: relative 1e-6 on the loss and gradient norm
      EXPECT_NEAR(got[size_t(r)][size_t(s)].loss, want[size_t(s)].loss, 1e-6 * want[size_t(s)].loss);
      EXPECT_NEAR(got[size_t(r)][size_t(s)].grad_norm, want[size_t(s)].grad_norm, 1e-5 * want[size_t(s)].grad_norm);
    }
  EXPECT_EQ(params[0], params[1]);
  double max_diff = 0;
  for (size_t i = 0; i < want_params.size(); ++i)
    max_diff = std::max(max_diff, double(std::fabs(params[0][i] - want_params[i])));
  EXPECT_LT(max_diff, 1e-5) << "three AdamW steps at lr 1e-2 from the same start";
  EXPECT_GT(max_diff, 0.0) << "suspicious: the two-rank run matched bit for bit in another summation order";
}

// --fsdp_reduce_dtype bf16 on replicated (DDP) ranks: each unit's gradient all-reduced in bf16.
// The ranks stay identical; against the fp32 all-reduce, measured over 3 AdamW steps at lr 1e-2 on
// the tiny model: losses 1.5e-4 relative, gradient norms 2.5e-3, weights 1.9e-2 (a weight whose
// tiny summed gradient changes sign in bf16 moves by up to 2·lr per step); asserted 1e-3, 1e-2,
// 6e-2 (3 steps × 2·lr), and not bit-identical (the bf16 reduce is used).
TEST(TrainStep, ABf16AllReduceStaysWithinItsToleranceOfTheFp32One) {
  const Batch a = make_batch(2, 8, 11), b = make_batch(3, 8, 12);
  std::vector<std::vector<float>> params[2];
  std::vector<StepResult> got[2];
  for (int k = 0; k < 2; ++k) {
    const StepOptions opt{.reduce_dtype = k == 0 ? DType::f32 : DType::bf16};
    ThreadWorld world(2);
    params[k].resize(2);
    std::vector<StepResult> steps[2];
    run_ranks(2, [&](int r) {
      Rank rank(world.comm(r));
      for (int s = 0; s < 3; ++s) steps[r].push_back(train_step(*rank.model, *rank.opt, world.comm(r), {r == 0 ? a : b}, 1e-2, opt));
      params[k][size_t(r)] = rank.params();
    });
    EXPECT_EQ(params[k][0], params[k][1]) << "ranks differ";
    got[k] = steps[0];
  }
  double loss = 0, norm = 0, weights = 0;
  for (size_t s = 0; s < 3; ++s) {
    loss = std::max(loss, std::fabs(got[1][s].loss - got[0][s].loss) / got[0][s].loss);
    norm = std::max(norm, std::fabs(got[1][s].grad_norm - got[0][s].grad_norm) / got[0][s].grad_norm);
  }
  for (size_t i = 0; i < params[0][0].size(); ++i)
    weights = std::max(weights, double(std::fabs(params[1][0][i] - params[0][0][i])));
  std::printf("DDP bf16 vs fp32 all-reduce: loss %.3g, grad norm %.3g, weights %.3g\n", loss, norm, weights);
  EXPECT_LT(loss, 1e-3);
  EXPECT_LT(norm, 1e-2);
  EXPECT_LT(weights, 6e-2);
  EXPECT_GT(weights, 0.0) << "bit-identical: the bf16 all-reduce was not used";
}

// Two replicated ranks, each accumulating two micro-batches, train what one process accumulating
// all four trains: the ranks all-reduce after the step's last micro-batch only (DDP's no_sync
// before it). All-reducing after every micro-batch summed the first micro-batch's gradient twice
// (grad norm 1.93 instead of 1.30 at step 1).
TEST(TrainStep, TwoReplicatedRanksAccumulatingTwoEachTrainLikeOneProcessAccumulatingFour) {
  const std::vector<Batch> micro = {make_batch(2, 8, 11), make_batch(3, 8, 12), make_batch(1, 8, 13), make_batch(2, 8, 14)};
  auto be = create_backend("cpu");
  LlamaModel one(tiny_config(), *be);
  init_weights(one, 7);
  AdamW opt(one, AdamWConfig{0.9f, 0.999f, 1e-8f, 0.01f});
  const std::unique_ptr<Comm> local = make_local_comm(*be);
  std::vector<StepResult> want;
  for (int s = 0; s < 2; ++s) want.push_back(train_step(one, opt, *local, micro, 1e-2, StepOptions{}));
  ThreadWorld world(2);
  std::vector<StepResult> got[2];
  run_ranks(2, [&](int r) {
    Rank rank(world.comm(r));
    for (int s = 0; s < 2; ++s)
      got[r].push_back(train_step(*rank.model, *rank.opt, world.comm(r), {micro[size_t(2 * r)], micro[size_t(2 * r + 1)]},
                                  1e-2, StepOptions{}));
  });
  for (int s = 0; s < 2; ++s) {
    EXPECT_NEAR(got[0][size_t(s)].loss, want[size_t(s)].loss, 1e-6 * want[size_t(s)].loss) << "step " << s;
    EXPECT_NEAR(got[0][size_t(s)].grad_norm, want[size_t(s)].grad_norm, 1e-5 * want[size_t(s)].grad_norm) << "step " << s;
  }
}

TEST(TrainStep, AMismatchedCollectiveIsAnErrorNamingBoth) {
  ThreadWorld world(2);
  EXPECT_THROW(run_ranks(2, [&](int r) {
                 if (r == 0) world.comm(r).barrier("save");
                 else world.comm(r).sum(1.0, "loss_sum");
               }),
               Error);
}

}  // namespace sft
