// Data preparation throughput (issue 3, deliverable 8): LLaMA-Factory's Alpaca demo replicated to
// >= 100 MB, read + validated + rendered (vicuna_v1.1) + tokenized with labels on all cores, against
// FastChat's own json.load + preprocess() (slow LlamaTokenizer) on the first N samples of the same
// file, extrapolated per sample. Disabled by default; run:
//   test_data --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
// SFT_DATA_BENCH_FASTCHAT_SAMPLES sets N (default 3000).
#include <gtest/gtest.h>

#include <omp.h>

#include <chrono>
#include <cstdlib>
#include <fstream>

#include "data/dataset.h"
#include "data_test_util.h"
#include "tokenizer/tokenizer.h"

using namespace data_test;

namespace {

TEST(Data, DISABLED_Throughput) {
  const std::string src = kShared + "/data/alpaca_en_demo.json";
  if (!fs::exists(src)) GTEST_SKIP() << src << " is absent";
  const fs::path big = kBuildDir / "data-test" / "alpaca_x120.json";
  if (!fs::exists(big)) {
    const std::string base = read_file(src);
    const std::string inner = base.substr(base.find('[') + 1, base.rfind(']') - base.find('[') - 1);
    fs::create_directories(big.parent_path());
    std::ofstream out(big, std::ios::binary);
    out << "[";
    for (int k = 0; k < 120; ++k) out << (k ? "," : "") << inner;
    out << "]";
  }
  const double mb = static_cast<double>(fs::file_size(big)) / 1e6;
  ASSERT_GE(mb, 100.0);
  auto tok = sft::load_tokenizer(kLlama2);
  sft::DataOptions opt;
  opt.model_max_length = 2048;
  const auto t0 = std::chrono::steady_clock::now();
  const sft::Dataset ds = sft::load_dataset(big.string(), *tok, opt);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ sft      ] %.1f MB, %lld samples (%lld tokens) in %.2f s on %d threads: %.0f samples/s, %.2f MB/s\n", mb,
              (long long)ds.stats().samples, (long long)ds.stats().tokens, s, omp_get_max_threads(),
              static_cast<double>(ds.stats().samples) / s, mb / s);
  EXPECT_EQ(ds.stats().kept, 999 * 120);

  if (!fs::exists(kPython) || run(kPython + " -c 'import fastchat'").code != 0)
    GTEST_SKIP() << "FastChat is not installed in the test virtualenv; no comparison";
  const char* n_env = std::getenv("SFT_DATA_BENCH_FASTCHAT_SAMPLES");
  const std::string n = n_env ? n_env : "3000";
  RunResult r = run(kPython + " " + kRoot + "/tools/fastchat_reference.py bench --data " + big.string() +
                    " --format alpaca --tokenizer " + kLlama2 + " --model_max_length 2048 --max_samples " + n);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json fc = nlohmann::json::parse(r.out.substr(r.out.rfind('{')));
  std::printf("[ FastChat ] preprocess() on %lld of %lld samples in %.2f s (+ json.load of the whole file %.2f s, "
              "counted pro rata): %.0f samples/s, %.2f MB/s, one process\n",
              fc["samples"].get<long long>(), fc["file_samples"].get<long long>(), fc["preprocess_s"].get<double>(),
              fc["load_s_full_file"].get<double>(), fc["samples_per_s"].get<double>(), fc["mb_per_s"].get<double>());
  std::printf("[ ratio    ] sft / FastChat: %.1fx (samples/s)\n",
              static_cast<double>(ds.stats().samples) / s / fc["samples_per_s"].get<double>());
}

}  // namespace
