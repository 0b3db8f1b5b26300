// Checkpoints and HF files of sharded stores on the in-process ThreadWorld: each rank writes its
// own optimizer shard (one that cannot fails the save on every rank, naming it), the manifest
// verifies them, a missing or damaged rank file is an error
// naming it (and auto-resume's choice falls back past it), one process re-slices the shards into
// exactly the moments the ranks held (under hybrid_shard: the first node's); rank 0's streamed HF save writes the bytes one process
// writes; rank 0's memory while saving stays within one unit of what training left, and a rank
// reads only its shard of the base model's bytes at load.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "backend/backend.h"
#include "dist/comm.h"
#include "dist/sharded_checkpoint.h"
#include "dist/sharded_store.h"
#include "io/checkpoint.h"
#include "io/hf_model.h"
#include "model/init.h"
#include "train/train_step.h"
#include "dist_test_util.h"

namespace sft {

namespace {

namespace fs = std::filesystem;
using dist_test::make_batch;
using dist_test::run_ranks;

const AdamWConfig kAdam{0.9f, 0.999f, 1e-8f, 0.01f};

// Unit sizes that do not divide by 2 or 3 (padded shards); `vocab` and `hidden` scale it up.
LlamaConfig config(int64_t vocab = 53, int64_t hidden = 35, int64_t head_dim = 8) {
  LlamaConfig c;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = hidden + 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = head_dim;
  c.max_position_embeddings = 64;
  return c;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(fs::temp_directory_path() / ("sft_sharded_ckpt_" + name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// A line of /proc/self/status in KiB ("VmRSS", "VmHWM").
int64_t status_kib(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(key + ":")) return std::stoll(line.substr(key.size() + 1));
  return -1;
}

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }  // VmHWM = VmRSS now

// A sharded model of this rank; initialised (every rank at once) unless `init` is false.
std::unique_ptr<LlamaModel> sharded_model(const LlamaConfig& cfg, Backend& be, Comm& comm, bool init = true,
                                          ShardMode mode = ShardMode::full_shard) {
  auto m = std::make_unique<LlamaModel>(cfg, be, ModelOptions{}, std::make_unique<ShardedParamStore>(cfg, be, comm, mode));
  if (init) init_weights(*m, 7);
  return m;
}

// What a one-process load of each rank's moments must give: rank states placed at their slices.
struct RankStates {
  std::vector<LocalSlice> slices;
  std::vector<float> m, v;
};

}  // namespace

TEST(ShardedCheckpoint, EachRankWritesItsOptimizerShardWhichOneProcessReslicesExactly) {
  const LlamaConfig cfg = config();
  TempDir out("layout");
  std::vector<RankStates> held(2);
  std::string ckpt2, ckpt4;
  ThreadWorld tw(2);
  run_ranks(2, [&](int r) {
    auto be = create_backend("cpu");
    auto m = sharded_model(cfg, *be, tw.comm(r));
    AdamW opt(*m, kAdam);
    const std::vector<Batch> mine = {make_batch(2, 6, 100 + uint64_t(r), true, 53)};
    for (int step : {2, 4}) {
      train_step(*m, opt, tw.comm(r), mine, 1e-2, {});
      const std::string dir = save_checkpoint_any(out.path.string(), step, *m, tw.comm(r), opt.state(),
                                                  nlohmann::json{{"global_step", step}}, {});
      if (r == 0) (step == 2 ? ckpt2 : ckpt4) = dir;
    }
    const int64_t n = m->store().local_params().numel();
    held[size_t(r)] = {m->store().local_slices(), std::vector<float>(opt.m().f32(), opt.m().f32() + n),
                       std::vector<float>(opt.v().f32(), opt.v().f32() + n)};
  });
  ASSERT_FALSE(ckpt4.empty());
  for (const char* f : {"optimizer-rank-00000-of-00002.safetensors", "optimizer-rank-00001-of-00002.safetensors"})
    EXPECT_TRUE(fs::exists(fs::path(ckpt4) / f)) << f;
  EXPECT_FALSE(fs::exists(fs::path(ckpt4) / "optimizer.safetensors"));
  const CheckpointVerification v = verify_checkpoint(ckpt4);
  EXPECT_TRUE(v.ok() && v.checksums) << v.describe();

  // One process loads the moments the two ranks held, bit for bit, each at its flat offset.
  auto be = create_backend("cpu");
  LlamaModel one(cfg, *be);
  AdamW opt(one, kAdam);
  OptimizerState st = opt.state();
  load_checkpoint(ckpt4, one, st);
  EXPECT_EQ(st.steps, 2);
  for (const RankStates& rs : held)
    for (const LocalSlice& s : rs.slices)
      for (int64_t i = 0; i < s.size; ++i) {
        ASSERT_EQ(opt.m().f32()[s.offset + i], rs.m[size_t(s.local_offset + i)]) << "exp_avg at " << s.offset + i;
        ASSERT_EQ(opt.v().f32()[s.offset + i], rs.v[size_t(s.local_offset + i)]) << "exp_avg_sq at " << s.offset + i;
      }

  // A damaged rank file: verification names it, auto-resume's choice falls back to checkpoint-2.
  const fs::path shard = fs::path(ckpt4) / "optimizer-rank-00001-of-00002.safetensors";
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x55');
  }
  const CheckpointVerification bad = verify_checkpoint(ckpt4);
  EXPECT_NE(bad.describe().find("optimizer-rank-00001-of-00002.safetensors: XXH3"), std::string::npos) << bad.describe();
  const VerifiedChoice choice = find_verified_checkpoint(out.path.string(), 4);
  EXPECT_EQ(choice.dir, ckpt2);
  ASSERT_EQ(choice.skipped.size(), 1u);
  EXPECT_NE(choice.skipped[0].second.find("optimizer-rank-00001-of-00002.safetensors"), std::string::npos);
  // A missing one: verification and the loader name it.
  fs::remove(shard);
  EXPECT_NE(verify_checkpoint(ckpt4).describe().find("optimizer-rank-00001-of-00002.safetensors: missing"),
            std::string::npos);
  try {
    load_checkpoint(ckpt4, one, st);
    ADD_FAILURE() << "a checkpoint without rank 1's optimizer shard loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer-rank-00001-of-00002.safetensors is missing (the optimizer state "
                                         "was written by 2 ranks)"), std::string::npos) << e.what();
  }
}

// A rank whose shard cannot be written (here rank 1 hands the writer a state it refuses): every
// rank fails, rank 0 naming rank 1, and no checkpoint or temporary directory is left behind.
TEST(ShardedCheckpoint, ARankThatCannotWriteItsShardFailsTheSaveOnEveryRankNamingIt) {
  const LlamaConfig cfg = config();
  TempDir out("failing");
  ThreadWorld tw(2);
  std::vector<std::string> errors(2);
  run_ranks(2, [&](int r) {
    auto be = create_backend("cpu");
    auto m = sharded_model(cfg, *be, tw.comm(r));
    AdamW opt(*m, kAdam);
    OptimizerState state = opt.state();
    if (r == 1) state.tensors[0].first = "__metadata__";  // not a tensor name: the writer refuses it
    try {
      save_checkpoint_any(out.path.string(), 2, *m, tw.comm(r), state, nlohmann::json{{"global_step", 2}}, {});
    } catch (const Error& e) {
      errors[size_t(r)] = e.what();
    }
  });
  EXPECT_NE(errors[0].find("rank(s) 1 could not write their optimizer shard into " +
                           (out.path / ".tmp-checkpoint-2").string()), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("'__metadata__' is not a tensor name"), std::string::npos) << errors[1];
  EXPECT_FALSE(fs::exists(out.path / "checkpoint-2"));
  EXPECT_FALSE(fs::exists(out.path / ".tmp-checkpoint-2"));
}

// hybrid_shard over 2 nodes × 2 ranks: the first node's ranks write the two shards (the second
// node holds the same values and writes none); one process loads what they held.
TEST(ShardedCheckpoint, UnderHybridShardTheFirstNodeWritesTheShards) {
  const LlamaConfig cfg = config();
  TempDir out("hybrid");
  std::vector<RankStates> held(2);
  std::string ckpt;
  ThreadWorld tw(4, 2);
  run_ranks(4, [&](int r) {
    auto be = create_backend("cpu");
    auto m = sharded_model(cfg, *be, tw.comm(r), true, ShardMode::hybrid_shard);
    AdamW opt(*m, kAdam);
    train_step(*m, opt, tw.comm(r), {make_batch(2, 6, 100 + uint64_t(r), true, 53)}, 1e-2, {});
    const std::string dir =
        save_checkpoint_any(out.path.string(), 1, *m, tw.comm(r), opt.state(), nlohmann::json{{"global_step", 1}}, {});
    if (r == 0) ckpt = dir;
    if (r >= 2) return;
    const int64_t n = m->store().local_params().numel();
    held[size_t(r)] = {m->store().local_slices(), std::vector<float>(opt.m().f32(), opt.m().f32() + n), {}};
  });
  std::vector<std::string> shards;
  for (const auto& e : fs::directory_iterator(ckpt))
    if (e.path().filename().string().starts_with("optimizer")) shards.push_back(e.path().filename().string());
  std::sort(shards.begin(), shards.end());
  EXPECT_EQ(shards, (std::vector<std::string>{"optimizer-rank-00000-of-00002.safetensors",
                                              "optimizer-rank-00001-of-00002.safetensors"}));
  EXPECT_TRUE(verify_checkpoint(ckpt).ok()) << verify_checkpoint(ckpt).describe();
  auto be = create_backend("cpu");
  LlamaModel one(cfg, *be);
  AdamW opt(one, kAdam);
  OptimizerState st = opt.state();
  load_checkpoint(ckpt, one, st);
  for (const RankStates& rs : held)
    for (const LocalSlice& s : rs.slices)
      ASSERT_EQ(std::memcmp(opt.m().f32() + s.offset, rs.m.data() + s.local_offset, size_t(s.size) * 4), 0);
}

// Rank 0 writes the HF files unit by unit as rank 1 gathers each unit with it: byte for byte the
// files one process writes, in several safetensors files and converted to bf16.
TEST(ShardedCheckpoint, TheStreamedSaveWritesTheFilesOneProcessWrites) {
  const LlamaConfig cfg = config();
  TempDir one_dir("hf_one"), two_dir("hf_two");
  const SaveOptions opt{.dtype = DType::bf16, .max_shard_bytes = 3000};
  auto be = create_backend("cpu");
  LlamaModel one(cfg, *be);
  init_weights(one, 7);
  save_hf_model(one, one_dir.path.string(), opt);
  ThreadWorld tw(2);
  run_ranks(2, [&](int r) {
    auto rb = create_backend("cpu");
    auto m = sharded_model(cfg, *rb, tw.comm(r));
    write_on_rank0(*m, tw.comm(r), [&] { save_hf_model(*m, two_dir.path.string(), opt); });
  });
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(one_dir.path)) names.push_back(e.path().filename().string());
  ASSERT_GT(names.size(), 3u);  // config.json, the index and several weight files
  for (const std::string& n : names)
    EXPECT_TRUE(bytes_of(one_dir.path / n) == bytes_of(two_dir.path / n)) << n;
}

// Rank 0's peak memory while the checkpoint is written (its model streamed, every rank writing its
// own optimizer shard) against what training left: within one unit. Before, rank 0 gathered both
// AdamW moments whole (8 bytes per parameter). Both ranks share this process, so the measured
// growth is theirs together.
TEST(ShardedCheckpoint, RankZerosMemoryWhileSavingStaysWithinOneUnitOfTraining) {
  const LlamaConfig cfg = config(16000, 256, 64);
  TempDir out("rss_save");
  int64_t params = 0, largest_unit = 0, before_kib = 0, peak_kib = 0;
  ThreadWorld tw(2);
  run_ranks(2, [&](int r) {
    auto be = create_backend("cpu");
    auto m = sharded_model(cfg, *be, tw.comm(r));
    AdamW opt(*m, kAdam);
    train_step(*m, opt, tw.comm(r), {make_batch(1, 8, 5 + uint64_t(r), true, 16000)}, 1e-3, {});
    tw.comm(r).barrier("trained");
    if (r == 0) {
      params = m->num_params();
      for (const ParamUnit& u : m->store().units()) largest_unit = std::max(largest_unit, u.size * 4);
      before_kib = status_kib("VmRSS");
      reset_peak_rss();
    }
    tw.comm(r).barrier("measuring");
    save_checkpoint_any(out.path.string(), 1, *m, tw.comm(r), opt.state(), nlohmann::json{{"global_step", 1}}, {});
    tw.comm(r).barrier("saved");
    if (r == 0) peak_kib = status_kib("VmHWM");
  });
  const double grew_mb = double(peak_kib - before_kib) / 1024, unit_mb = double(largest_unit) / 1048576;
  std::printf("save of %lld parameters (fp32 model %.1f MB, largest unit %.1f MB) on 2 ranks: RSS %.1f MB before, "
              "peak %.1f MB while saving (+%.1f MB)\n", (long long)params, double(params) * 4 / 1048576, unit_mb,
              double(before_kib) / 1024, double(peak_kib) / 1024, grew_mb);
  EXPECT_LT(grew_mb, unit_mb) << "rank 0 gathered more than one unit's worth while saving";
}

// Rank 0 of 4 loads the base model into its shard reading only its quarter of the file's bytes
// (the mapping's pages it touches, plus the pages around each range's ends), not the whole file.
TEST(ShardedCheckpoint, ARankReadsOnlyItsShardOfTheBaseModel) {
  const LlamaConfig cfg = config(16000, 256, 64);
  TempDir dir("rss_load");
  auto be = create_backend("cpu");
  {
    LlamaModel one(cfg, *be);
    init_weights(one, 7);
    save_hf_model(one, dir.path.string(), SaveOptions{.dtype = DType::f32});
  }
  const double file_mb = double(fs::file_size(dir.path / "model.safetensors")) / 1048576;
  ThreadWorld tw(4);  // only rank 0 runs: a full_shard load calls no collective
  auto m = sharded_model(cfg, *be, tw.comm(0), false);
  be->fill_zero(m->store().local_params());  // the shard's own pages counted before
  const int64_t before = status_kib("VmRSS");
  reset_peak_rss();
  load_hf_weights(dir.path.string(), *m);
  const double grew_mb = double(status_kib("VmHWM") - before) / 1024;
  std::printf("rank 0 of 4 loading a %.1f MB fp32 model: peak RSS +%.1f MB (its shard %.1f MB)\n", file_mb, grew_mb,
              double(m->store().local_params().numel()) * 4 / 1048576);
  EXPECT_LT(grew_mb, file_mb / 4 + 4) << "rank 0 touched more of the file than its shard";
  // Its shard holds what one process loads at its slices.
  LlamaModel one(cfg, *be);
  load_hf_weights(dir.path.string(), one);
  const float* local = m->store().local_params().f32();
  for (const LocalSlice& s : m->store().local_slices())
    ASSERT_EQ(std::memcmp(local + s.local_offset, one.store().local_params().f32() + s.offset, size_t(s.size) * 4), 0)
        << "unit " << s.unit;
}

}  // namespace sft
