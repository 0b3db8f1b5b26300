// Fuzz target: the per-rank optimizer files of a sharded checkpoint (io/optimizer_files), whose
// safetensors metadata lists the flat ranges each holds ("slices", "num_params", "step"). Two rank
// files of 64 parameters are written once (rank 0 holding [0, 20) and [40, 64), rank 1 [20, 40),
// padded as a sharded store pads its blocks); the input replaces rank 1's file and the state is
// loaded into one process's layout and into a 3-way split. Slices outside the file or the model,
// overlaps, gaps and malformed metadata must be sft::Errors.
#include <vector>

#include "core/file_util.h"
#include "io/optimizer_files.h"
#include "model_fixture.h"

namespace {

using namespace sft;

constexpr int64_t kParams = 64;

struct Fixture {
  std::string dir, rank1;
};

// An optimizer state over `slices` packed with one spare element after each.
struct Local {
  std::vector<LocalSlice> slices;
  std::vector<float> m, v;
  OptimizerState state;
  explicit Local(std::vector<std::pair<int64_t, int64_t>> ranges) {  // (flat offset, size)
    int64_t at = 0;
    for (auto [off, size] : ranges) {
      slices.push_back({0, off, at, size});
      at += size + 1;
    }
    m.assign(size_t(at), 0.5f);
    v.assign(size_t(at), 0.25f);
    state.tensors = {{"exp_avg", Tensor(m.data(), DType::f32, {at})}, {"exp_avg_sq", Tensor(v.data(), DType::f32, {at})}};
    state.steps = 3;
  }
};

Backend& backend() { return fuzz::tiny_model().backend(); }

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture x;
    x.dir = fuzz::fresh_dir("optimizer_files");
    Local r0({{0, 20}, {40, 24}}), r1({{20, 20}});
    write_optimizer_shard(x.dir, backend(), r0.state, r0.slices, kParams, 0, 2);
    const std::string path = write_optimizer_shard(x.dir, backend(), r1.state, r1.slices, kParams, 1, 2);
    x.rank1 = read_text_file(path, "fuzz");
    fuzz::export_seed("rank1.safetensors", x.rank1);
    return x;
  }();
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& f = fixture();
  fuzz::write_file(f.dir + "/" + optimizer_rank_file(1, 2), fuzz::as_text(data, size));
  for (const auto& ranges : {std::vector<std::pair<int64_t, int64_t>>{{0, kParams}},
                             std::vector<std::pair<int64_t, int64_t>>{{10, 12}, {50, 14}}}) {
    Local into(ranges);
    fuzz::expect_clean([&] { load_optimizer_state(f.dir, backend(), kParams, into.slices, into.state); });
  }
  return 0;
}
