// Helpers of the tests that launch sft under mpirun (tests/dist): the mpirun command line the CI
// container needs, and whether this build and machine can run MPI jobs at all; the micro model
// the training tests run and what they compare (per-step losses from metrics.jsonl, final weights).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../cli/cli_test_util.h"
#include "dist/world.h"
#include "io/safetensors.h"

namespace mpi_test {

// mpirun as root in a container: allowed explicitly, shared-memory copies without CMA, ranks may
// outnumber cores, and a hang fails the job instead of blocking CI. `env`, not shell assignments:
// `exec env ... mpirun` keeps mpirun's pid for signals.
inline std::string mpirun(int np) {
  return "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none "
         "mpirun --oversubscribe --timeout 240 -np " + std::to_string(np) + " ";
}

// "" when MPI jobs can run here, else why not (for GTEST_SKIP).
inline std::string why_no_mpi() {
  if (!sft::mpi_built()) return std::string("this build has no MPI: ") + sft::no_mpi_reason();
  if (cli_test::run("command -v mpirun").code != 0) return "mpirun not found (apt-get install openmpi-bin)";
  return "";
}

// A micro LLaMA (64 wide, 2 layers) with the real LLaMA-2 vocabulary.
inline const char* kConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "vocab_size": 32000, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2,
  "initializer_range": 0.02, "torch_dtype": "float32"})";

// root/model: the micro model (fp32, seed 11) with the LLaMA-2 tokenizer, made by `sft init`.
inline void make_micro_model(const cli_test::fs::path& root) {
  cli_test::fs::create_directories(root);
  std::ofstream(root / "micro.json") << kConfig;
  const cli_test::CmdResult r = cli_test::run(cli_test::kSft + " init --preset " + (root / "micro.json").string() +
                                              " --dtype fp32 --tokenizer " + cli_test::kTokenizer + " --output_dir " +
                                              (root / "model").string() + " --seed 11");
  ASSERT_EQ(r.code, 0) << r.out;
}

// Step → loss of a run's metrics.jsonl (a resumed run carries the history of the one it resumed).
inline std::map<int64_t, double> step_losses(const cli_test::fs::path& dir) {
  std::map<int64_t, double> m;
  std::istringstream in(cli_test::read_file(dir / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("skipped")) m[j["step"].get<int64_t>()] = j["loss"].get<double>();
  }
  return m;
}

// The largest |a - b| over the fp32 tensors of two directories' model.safetensors.
inline double max_weight_diff(const cli_test::fs::path& a, const cli_test::fs::path& b) {
  sft::SafetensorsFile wa((a / "model.safetensors").string()), wb((b / "model.safetensors").string());
  EXPECT_EQ(wa.tensors().size(), wb.tensors().size());
  double max_diff = 0;
  for (const auto& t : wa.tensors()) {
    const auto& u = wb.at(t.name);
    EXPECT_EQ(t.nbytes(), u.nbytes()) << t.name;
    const float* x = reinterpret_cast<const float*>(t.data);
    const float* y = reinterpret_cast<const float*>(u.data);
    for (int64_t i = 0; i < std::min(t.numel(), u.numel()); ++i) max_diff = std::max(max_diff, double(std::fabs(x[i] - y[i])));
  }
  return max_diff;
}

}  // namespace mpi_test
