// The optimizer files of a checkpoint (io/optimizer_files.h): rank files written with any split of
// the flat layout are re-sliced exactly into any other split (one process, other ranks) and the
// one-process file into any split; rank files that miss or repeat parameters, disagree on the
// step or the parameter count, lack a rank, or list slices outside the file are errors naming the
// file and what is wrong.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "backend/backend.h"
#include "io/optimizer_files.h"
#include "io/safetensors.h"
#include "io_test_util.h"

namespace sft {

namespace {

using test::expect_error;
using test::TempDir;

constexpr int64_t kParams = 10;

// A process's local states: `slices` of the flat layout, packed with `pad` spare elements after
// each (as a sharded store pads its blocks), "exp_avg" = flat index + 0.5, "exp_avg_sq" = -index.
struct Local {
  std::vector<LocalSlice> slices;
  std::vector<float> m, v;
  OptimizerState state;
  Local(std::vector<std::pair<int64_t, int64_t>> ranges, int64_t pad = 0) {  // (offset, size)
    int64_t at = 0;
    for (auto [off, size] : ranges) {
      slices.push_back({0, off, at, size});
      at += size + pad;
    }
    m.assign(size_t(at), 0.0f);
    v.assign(size_t(at), 0.0f);
    state.tensors = {{"exp_avg", Tensor(m.data(), DType::f32, {at})}, {"exp_avg_sq", Tensor(v.data(), DType::f32, {at})}};
  }
  void fill() {
    for (const LocalSlice& s : slices)
      for (int64_t i = 0; i < s.size; ++i) {
        m[size_t(s.local_offset + i)] = float(s.offset + i) + 0.5f;
        v[size_t(s.local_offset + i)] = -float(s.offset + i);
      }
  }
  void expect_filled() const {
    for (const LocalSlice& s : slices)
      for (int64_t i = 0; i < s.size; ++i) {
        EXPECT_EQ(m[size_t(s.local_offset + i)], float(s.offset + i) + 0.5f) << "exp_avg at " << s.offset + i;
        EXPECT_EQ(v[size_t(s.local_offset + i)], -float(s.offset + i)) << "exp_avg_sq at " << s.offset + i;
      }
  }
};

// Writes one rank file per entry of `ranks` (each a list of ranges) into dir, step 7.
void write_ranks(Backend& be, const std::string& dir, const std::vector<std::vector<std::pair<int64_t, int64_t>>>& ranks,
                 int64_t num_params = kParams, std::vector<int64_t> steps = {}) {
  for (size_t r = 0; r < ranks.size(); ++r) {
    Local l(ranks[r], 1);
    l.fill();
    l.state.steps = steps.empty() ? 7 : steps[r];
    write_optimizer_shard(dir, be, l.state, l.slices, num_params, int(r), int(ranks.size()));
  }
}

}  // namespace

TEST(OptimizerFiles, RankFilesReSliceExactlyIntoAnySplit) {
  auto be = create_backend("cpu");
  TempDir dir;
  write_ranks(*be, dir.path.string(), {{{0, 3}, {5, 2}}, {{3, 2}, {7, 3}}});  // 2 ranks, interleaved units
  for (const auto& ranges : std::vector<std::vector<std::pair<int64_t, int64_t>>>{
           {{0, 10}}, {{0, 4}}, {{4, 3}}, {{7, 3}}, {{2, 2}, {6, 3}}}) {  // one process; a 3-way split; other cuts
    Local l(ranges, 2);
    load_optimizer_state(dir.path.string(), *be, kParams, l.slices, l.state);
    EXPECT_EQ(l.state.steps, 7);
    l.expect_filled();
  }
}

TEST(OptimizerFiles, TheOneProcessFileLoadsIntoAnySplit) {
  auto be = create_backend("cpu");
  TempDir dir;
  Local full({{0, kParams}});
  full.fill();
  full.state.steps = 4;
  write_optimizer_full(dir.path.string(), *be, full.state);
  Local part({{1, 3}, {8, 2}}, 1);
  load_optimizer_state(dir.path.string(), *be, kParams, part.slices, part.state);
  EXPECT_EQ(part.state.steps, 4);
  part.expect_filled();
}

TEST(OptimizerFiles, RankFilesThatDoNotFitAreNamedErrors) {
  auto be = create_backend("cpu");
  Local l({{0, kParams}});
  auto load = [&](const TempDir& d) { return [&] { load_optimizer_state(d.path.string(), *be, kParams, l.slices, l.state); }; };
  {
    TempDir d;
    write_ranks(*be, d.path.string(), {{{0, 6}}, {{5, 5}}});
    expect_error(load(d), {d.path.string(), "hold twice parameters [5, 6)"});
  }
  {
    TempDir d;
    write_ranks(*be, d.path.string(), {{{0, 4}}, {{6, 4}}});
    expect_error(load(d), {"miss parameters [4, 6)", "optimizer-rank-00001-of-00002.safetensors"});
  }
  {
    TempDir d;
    write_ranks(*be, d.path.string(), {{{0, 5}}, {{5, 5}}}, kParams, {7, 8});
    expect_error(load(d), {"optimizer-rank-00001-of-00002.safetensors: step 8, but", "says 7"});
  }
  {
    TempDir d;
    write_ranks(*be, d.path.string(), {{{0, 5}}, {{5, 6}}}, 11);
    expect_error(load(d), {"optimizer-rank-00000-of-00002.safetensors: written for 11 parameters, the model has 10"});
  }
  {
    TempDir d;
    write_ranks(*be, d.path.string(), {{{0, 3}}, {{3, 3}}, {{6, 4}}});
    std::filesystem::remove(d.path / "optimizer-rank-00002-of-00003.safetensors");
    expect_error(load(d), {"optimizer-rank-00002-of-00003.safetensors is missing (the optimizer state was written by 3 ranks)"});
  }
  {
    TempDir d;
    expect_error(load(d), {d.path.string() + ": no optimizer.safetensors or optimizer-rank-XXXXX-of-YYYYY.safetensors"});
  }
  // Slices whose numbers would wrap around or point outside the file's tensors.
  for (const char* slices : {"[[18446744073709551615, 0, 1]]", "[[0, 9223372036854775808, 10]]", "[[0, 5, 10]]"}) {
    TempDir d;
    std::vector<float> zeros(10, 0.0f);
    const std::vector<SafetensorsWriteItem> items = {{"exp_avg", zeros.data(), "F32", {10}},
                                                     {"exp_avg_sq", zeros.data(), "F32", {10}}};
    write_safetensors((d.path / optimizer_rank_file(0, 1)).string(), items,
                      {{"step", "1"}, {"num_params", "10"}, {"slices", slices}});
    expect_error(load(d), {"optimizer-rank-00000-of-00001.safetensors: slice"});
  }
}

}  // namespace sft
