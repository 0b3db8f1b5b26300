// `mpirun -np 2 sft bench --fsdp MODE`: every rank trains its own random rows under the mode, and
// rank 0 reports each rank's tokens/s, the share of its step spent inside collectives and its peak
// RSS, the total tokens/s and the exposed communication (the largest share of any rank); the
// per-rank lines and the JSON agree with each other. Bounded by mpirun --timeout; skips visibly
// without MPI or mpirun.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "../cli/cli_test_util.h"
#include "dist/world.h"

using namespace cli_test;

namespace {

std::string mpirun(int np) {  // as root in a container; ranks may outnumber cores; a hang fails
  return "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none "
         "mpirun --oversubscribe --timeout 240 -np " + std::to_string(np) + " ";
}

class MpiBench : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!sft::mpi_built()) GTEST_SKIP() << "this build has no MPI: " << sft::no_mpi_reason();
    if (run("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not found (apt-get install openmpi-bin)";
  }
};

TEST_P(MpiBench, ReportsEveryRankAndTheExposedCommunication) {
  const std::string mode = GetParam();
  const CmdResult r = run(mpirun(2) + kSft + " bench --preset tiny --dtype fp32 --threads 1 --batch_size 1 --seq_len 64"
                          " --warmup 1 --steps 2 --json --fsdp " + mode);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("data parallel: 2 ranks"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(last_line(r.out));
  EXPECT_EQ(j["world_size"].get<int>(), 2);
  EXPECT_EQ(j["fsdp"].get<std::string>(), mode);
  // the per-rank lines, in rank order, and the totals computed from them
  const std::regex line(R"(rank (\d): tokens/s ([0-9.]+) \| inside collectives ([0-9.]+)% of the step \| peak RSS ([0-9]+) MB)");
  double sum = 0, most = 0;
  int ranks = 0;
  for (std::sregex_iterator it(r.out.begin(), r.out.end(), line), end; it != end; ++it, ++ranks) {
    EXPECT_EQ(std::stoi((*it)[1]), ranks);
    sum += std::stod((*it)[2]);
    most = std::max(most, std::stod((*it)[3]) / 100.0);
    EXPECT_GT(std::stod((*it)[4]), 50.0) << "a rank's peak RSS";
  }
  ASSERT_EQ(ranks, 2) << r.out;
  EXPECT_NEAR(j["total_tokens_per_s"].get<double>(), sum, 0.01 * sum + 0.2);
  EXPECT_NEAR(j["exposed_comm"].get<double>(), most, 0.002);
  EXPECT_GT(most, 0.0) << "two ranks that all-reduce or gather spend some time in collectives";
  EXPECT_LT(most, 1.0);
  EXPECT_EQ(j["peak_rss_mb_per_rank"].size(), 2u);
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Modes, MpiBench, ::testing::Values("full_shard", "shard_grad_op", "no_shard"));

}  // namespace
