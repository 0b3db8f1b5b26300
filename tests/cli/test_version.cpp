// `sft --version`: what a bug report needs — version, the git commit the binary was built from,
// the build type, this CPU's GEMM routes and whether CUDA, MPI and NCCL are in the build.
#include <gtest/gtest.h>

#include "cli_test_util.h"

using namespace cli_test;

TEST(CliVersion, NamesTheCommitBuildRoutesAndEngines) {
  const CmdResult r = run(kSft + " --version");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.rfind("sft ", 0), 0u) << r.out;
  const CmdResult git = run("git -C " + kRoot + " rev-parse --short=12 HEAD");
  if (git.code == 0 && git.out.size() >= 12) {  // a git checkout: the binary names its commit
    EXPECT_NE(r.out.find("commit " + git.out.substr(0, 12)), std::string::npos) << r.out << "\nHEAD " << git.out;
  }
  for (const char* part : {" build", "bf16 GEMMs: ", "fp32 GEMMs: ", "CUDA: ", "MPI: ", "NCCL: "})
    EXPECT_NE(r.out.find(part), std::string::npos) << "missing '" << part << "' in:\n" << r.out;
}
