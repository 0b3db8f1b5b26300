// Fuzz target: what resume reads from a checkpoint (io/checkpoint, data/loader): the manifest
// checkpoint_complete.json (verify_checkpoint), trainer_state.json (load_checkpoint) and the data
// loader's state (DataLoader::load_state, as the trainer restores state["data"]). A real
// checkpoint of the tiny model is written once; the input replaces
// manifest [===== trainer_state.json [===== loader state JSON].
#include <filesystem>

#include "core/file_util.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "io/checkpoint.h"
#include "model_fixture.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace sft;

struct Fixture {
  std::string dir, manifest, trainer_state;
  std::vector<float> m, v;
  OptimizerState opt;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Dataset> data;
  std::unique_ptr<DataLoader> loader;
};

Fixture& fixture() {
  static Fixture f = [] {
    Fixture x;
    const std::string out = fuzz::fresh_dir("checkpoint");
    LlamaModel& model = fuzz::tiny_model();
    int64_t n = 0;
    for (const auto& p : model.param_table()) n += p.view.numel();
    x.m.assign(size_t(n), 0.5f);
    x.v.assign(size_t(n), 0.25f);
    x.opt.tensors = {{"exp_avg", Tensor(x.m.data(), DType::f32, {n})}, {"exp_avg_sq", Tensor(x.v.data(), DType::f32, {n})}};
    x.opt.steps = 5;
    // The data and loader of a small run: the trainer's state["data"] is this loader's state().
    x.tok = load_tokenizer(fuzz::llama2_tokenizer_dir());
    const std::string data_path = fuzz::scratch_dir() + "/checkpoint-data.jsonl";
    std::string jsonl;
    for (int i = 0; i < 12; ++i)
      jsonl += R"({"conversations": [{"from": "human", "value": "question )" + std::to_string(i) +
               R"("}, {"from": "gpt", "value": "answer number )" + std::string(size_t(i), 'x') + "\"}]}\n";
    fuzz::write_file(data_path, jsonl);
    DataOptions dopt;
    dopt.model_max_length = 64;
    x.data = std::make_unique<Dataset>(load_dataset(data_path, *x.tok, dopt));
    LoaderOptions lopt;
    lopt.max_length = 64;
    lopt.batch_size = 2;
    x.loader = std::make_unique<DataLoader>(*x.data, lopt);
    Batch b;
    x.loader->next(b);
    const nlohmann::json state = {{"global_step", 5}, {"tokens_seen", 300}, {"data", x.loader->state()},
                                  {"rng", {{"seed", 42}}}, {"log_history", {{{"step", 5}, {"loss", 1.5}}}}};
    x.dir = save_checkpoint(out, 5, model, x.opt, state, {});
    x.manifest = read_text_file(x.dir + "/" + kCheckpointManifest, "fuzz");
    x.trainer_state = read_text_file(x.dir + "/trainer_state.json", "fuzz");
    fuzz::export_seed("manifest+state+loader",
                      x.manifest + "\n=====\n" + x.trainer_state + "\n=====\n" + x.loader->state().dump());
    return x;
  }();
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = fixture();
  const std::vector<std::string_view> parts = fuzz::split_parts(fuzz::as_text(data, size), 3);
  fuzz::write_file(f.dir + "/" + kCheckpointManifest, parts[0]);
  fuzz::write_file(f.dir + "/trainer_state.json", parts.size() > 1 ? parts[1] : std::string_view(f.trainer_state));
  fuzz::expect_clean([&] {
    const CheckpointVerification v = verify_checkpoint(f.dir);
    (void)v.describe();
  });
  fuzz::expect_clean([&] {
    const nlohmann::json state = load_checkpoint(f.dir, fuzz::tiny_model(), f.opt);
    if (state.is_object() && state.contains("data")) f.loader->load_state(state["data"]);
  });
  if (parts.size() > 2) {
    std::string error;
    if (const auto s = parse_json_strict(parts[2], &error)) fuzz::expect_clean([&] { f.loader->load_state(*s); });
  }
  return 0;
}
