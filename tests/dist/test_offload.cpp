// --fsdp "full_shard offload" in the parameter store (ShardOptions::offload), on the in-process
// ThreadWorld with the CPU backend as the "device": every host→device weight copy, device→host
// gradient copy and host AdamW step runs, so offload over 1, 2 and 3 ranks trains bit for bit what
// full_shard trains (fp32 and bf16), the device keeps only the units in flight (its bytes do not
// grow with the layers while full_shard's do), and checkpoints are the same files full_shard writes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "dist/sharded_checkpoint.h"
#include "io/checkpoint.h"
#include "sharded_test_util.h"

namespace sft {

namespace {

using namespace sharded_test;
namespace fs = std::filesystem;

constexpr ShardOptions kOffload{.offload = true};

void expect_identical(const Trained& got, const Trained& want, int world) {
  ASSERT_EQ(got.steps.size(), want.steps.size());
  for (size_t s = 0; s < want.steps.size(); ++s) {
    EXPECT_EQ(got.steps[s].targets, want.steps[s].targets) << "step " << s;
    EXPECT_EQ(got.steps[s].loss, want.steps[s].loss) << "step " << s;
    EXPECT_EQ(got.steps[s].grad_norm, want.steps[s].grad_norm) << "step " << s;
  }
  EXPECT_EQ(got.params, want.params);
  EXPECT_EQ(got.m, want.m);
  EXPECT_EQ(got.v, want.v);
  EXPECT_EQ(got.peak_resident, want.peak_resident);
  EXPECT_EQ(got.train_gathered_bytes, want.train_gathered_bytes);
  // The same collectives in the same order (the prefetch one unit ahead kept), or, in a world of
  // one, none of the weight gathers (the host→device copy is the gather).
  if (world > 1) {
    EXPECT_EQ(got.collectives, want.collectives);
  } else {
    std::vector<std::string> want_rest;
    for (const std::string& c : want.collectives)
      if (c.rfind("all_gather:weights", 0) != 0) want_rest.push_back(c);
    EXPECT_EQ(got.collectives, want_rest);
  }
}

}  // namespace

class OffloadTrains : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(OffloadTrains, LikeFullShardBitForBit) {
  const auto [world, tied] = GetParam();
  const LlamaConfig cfg = odd_config(tied);
  const Trained plain = sharded(cfg, world, ShardMode::full_shard);
  const Trained offload = sharded(cfg, world, ShardMode::full_shard, {}, DType::f32, {}, 0, nullptr, kOffload);
  expect_identical(offload, plain, world);
  // The same shards, now in host memory: the device holds less by all of them (one rank: exactly;
  // more ranks add the gathers' staging of this rank's block).
  EXPECT_EQ(offload.persistent_bytes, plain.persistent_bytes);
  if (world == 1) {
    EXPECT_EQ(plain.device_bytes - offload.device_bytes, plain.persistent_bytes);
  } else {
    EXPECT_LT(offload.device_bytes, plain.device_bytes);
  }
}

TEST_P(OffloadTrains, UnderBf16LikeFullShardBitForBit) {
  const auto [world, tied] = GetParam();
  const LlamaConfig cfg = odd_config(tied);
  const Trained plain = sharded(cfg, world, ShardMode::full_shard, {}, DType::bf16);
  const Trained offload = sharded(cfg, world, ShardMode::full_shard, {}, DType::bf16, {}, 0, nullptr, kOffload);
  expect_identical(offload, plain, world);
  // With recompute (gradient checkpointing, the 7B GPU check's setting) and a bf16 reduce too.
  const StepOptions b16_reduce{.reduce_dtype = DType::bf16};
  const ModelOptions recompute{.recompute = true};
  expect_identical(sharded(cfg, world, ShardMode::full_shard, recompute, DType::bf16, b16_reduce, 0, nullptr, kOffload),
                   sharded(cfg, world, ShardMode::full_shard, recompute, DType::bf16, b16_reduce), world);
}

INSTANTIATE_TEST_SUITE_P(Worlds, OffloadTrains,
                         ::testing::Combine(::testing::Values(1, 2, 3), ::testing::Bool()),
                         [](const auto& info) {
                           return std::to_string(std::get<0>(info.param)) + "ranks" +
                                  (std::get<1>(info.param) ? "Tied" : "");
                         });

// The device's share is the units in flight: the same bytes for 2 and 6 layers of one width (plus,
// under bf16, the 4 extra layers' fp32 norm weights the bf16 gathers read), within two gather and
// two gradient buffers of the largest unit and their staging; full_shard's grows with the layers.
TEST(Offload, TheDeviceHoldsOnlyTheUnitsInFlight) {
  for (const int world : {1, 2}) {
    LlamaConfig small = odd_config(), large = odd_config();
    large.num_hidden_layers = 6;
    for (const DType dt : {DType::f32, DType::bf16}) {
      const Trained a = sharded(small, world, ShardMode::full_shard, {}, dt, {}, 0, nullptr, kOffload);
      const Trained b = sharded(large, world, ShardMode::full_shard, {}, dt, {}, 0, nullptr, kOffload);
      const int64_t norms = dt == DType::bf16 ? 4 * 2 * small.hidden_size * 4 : 0;
      EXPECT_EQ(b.device_bytes - a.device_bytes, norms) << world << " ranks, " << dtype_name(dt);
      EXPECT_GT(b.persistent_bytes, 2 * a.persistent_bytes) << "the host shards grow with the layers";
    }
    const Trained plain_small = sharded(small, world, ShardMode::full_shard);
    const Trained plain_large = sharded(large, world, ShardMode::full_shard);
    EXPECT_GT(plain_large.persistent_bytes, plain_small.persistent_bytes);
    EXPECT_EQ(plain_large.device_bytes - plain_small.device_bytes,
              plain_large.persistent_bytes - plain_small.persistent_bytes);
    // Bound: the largest unit, padded: two gather buffers with their staging and two gradient
    // buffers with their reduce outputs.
    Weights layout;
    std::vector<ParamUnit> units;
    lay_out_weights(small, nullptr, layout, Device::cpu, &units);
    int64_t largest = 0;
    for (const ParamUnit& u : units) largest = std::max(largest, u.size);
    const int64_t padded = (largest + world - 1) / world * world, shard = padded / world;
    const Trained a = sharded(small, world, ShardMode::full_shard, {}, DType::f32, {}, 0, nullptr, kOffload);
    EXPECT_GT(a.device_bytes, 0);
    EXPECT_LE(a.device_bytes, 2 * 4 * (padded + shard) * 2) << world << " ranks";
  }
}

namespace {

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Trains 3 steps of 6 micro-batches on `world` ranks (offload or not) and saves checkpoint-3 in dir.
std::string train_and_save(const LlamaConfig& cfg, int world, ShardOptions opt, const fs::path& dir) {
  const std::vector<Batch> all = micro_batches(3);
  std::string ckpt;
  ThreadWorld tw(world);
  run_ranks(world, [&](int r) {
    auto be = create_backend("cpu");
    LlamaModel m(cfg, *be, {}, std::make_unique<ShardedParamStore>(cfg, *be, tw.comm(r), ShardMode::full_shard, opt));
    init_weights(m, 7);
    AdamW adam(m, kAdam);
    const int k = int(all.size()) / world;
    for (int s = 0; s < 3; ++s)
      train_step(m, adam, tw.comm(r), std::vector<Batch>(all.begin() + r * k, all.begin() + (r + 1) * k), 1e-2, {});
    const std::string saved =
        save_checkpoint_any(dir.string(), 3, m, tw.comm(r), adam.state(), nlohmann::json{{"global_step", 3}}, {});
    if (r == 0) ckpt = saved;
    tw.comm(r).barrier("saved");
  });
  return ckpt;
}

// Resumes ckpt on `world` ranks and returns rank 0's losses of 2 more steps.
std::vector<double> resume(const LlamaConfig& cfg, const std::string& ckpt, int world, ShardOptions opt) {
  const std::vector<Batch> all = micro_batches(3);
  std::vector<double> losses;
  ThreadWorld tw(world);
  run_ranks(world, [&](int r) {
    auto be = create_backend("cpu");
    LlamaModel m(cfg, *be, {}, std::make_unique<ShardedParamStore>(cfg, *be, tw.comm(r), ShardMode::full_shard, opt));
    AdamW adam(m, kAdam);
    OptimizerState st = adam.state();
    load_checkpoint(ckpt, m, st);
    adam.set_steps_taken(st.steps);
    const int k = int(all.size()) / world;
    for (int s = 0; s < 2; ++s) {
      const double loss =
          train_step(m, adam, tw.comm(r), std::vector<Batch>(all.begin() + r * k, all.begin() + (r + 1) * k), 1e-2, {})
              .loss;
      if (r == 0) losses.push_back(loss);
    }
  });
  return losses;
}

}  // namespace

// An offload run's checkpoint is full_shard's, file for file (the model and the N-independent
// optimizer shards), and resumes under offload at another N as full_shard resumes it.
TEST(Offload, CheckpointsAreFullShardsAndResumeAtAnotherWorldSize) {
  const LlamaConfig cfg = odd_config();
  const fs::path root = fs::temp_directory_path() / "sft_offload_ckpt_test";
  fs::remove_all(root);
  const std::string with = train_and_save(cfg, 2, kOffload, root / "offload");
  const std::string without = train_and_save(cfg, 2, {}, root / "plain");
  ASSERT_FALSE(with.empty());
  int compared = 0;
  for (const auto& e : fs::directory_iterator(without)) {
    if (e.path().extension() != ".safetensors") continue;
    EXPECT_EQ(file_bytes(fs::path(with) / e.path().filename()), file_bytes(e.path())) << e.path().filename();
    ++compared;
  }
  EXPECT_GE(compared, 3) << "the model and two optimizer shards";
  const std::vector<double> offload3 = resume(cfg, with, 3, kOffload), plain3 = resume(cfg, without, 3, {});
  ASSERT_EQ(offload3.size(), 2u);
  EXPECT_EQ(offload3, plain3);
  EXPECT_EQ(resume(cfg, with, 1, kOffload), resume(cfg, without, 1, {}));
  fs::remove_all(root);
}

}  // namespace sft
