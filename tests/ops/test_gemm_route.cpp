// The CPU GEMM routing rule (backend/cpu/gemm_route.h) on mocked CpuFeatures: AMX for bf16 where
// usable, vdpbf16ps only where it beats fp32 FMA (vendor rule or measured peaks), fp32 FMA math with
// a notice where it does not or is missing, oneDNN on AVX2, AMX refused by Linux failing over,
// SFT_GEMM overrides validated; the MFU peaks of the routes that run here (sane, AMX above
// vdpbf16ps on an AMX CPU) and the report the backend gives.
#include <gtest/gtest.h>

#include <string>

#include "backend/backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/gemm_route.h"
#include "backend/cpu/gemm.h"
#include "core/check.h"

namespace sft {
namespace {

using cpu::CpuFeatures;
using cpu::GemmRoute;

CpuFeatures avx2() {
  CpuFeatures f;
  f.avx2 = f.fma = true;
  f.vendor = "GenuineIntel";
  f.model_name = "mock AVX2";
  return f;
}
CpuFeatures avx512(const char* vendor) {
  CpuFeatures f = avx2();
  f.avx512 = true;
  f.vendor = vendor;
  f.model_name = std::string("mock AVX-512 ") + vendor;
  return f;
}
CpuFeatures zen5() {
  CpuFeatures f = avx512("AuthenticAMD");
  f.avx512_bf16 = true;
  return f;
}
CpuFeatures sapphire_rapids(bool permitted) {
  CpuFeatures f = avx512("GenuineIntel");
  f.avx512_bf16 = f.amx_bf16 = true;
  f.amx_permitted = permitted;
  if (!permitted) f.amx_refusal = "Linux refused AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM): Operation not permitted";
  return f;
}

TEST(GemmRoute, AmxCpuRunsBf16OnOurAmxGemmAndFp32OnOurFma) {
  const auto r = cpu::choose_gemm_routes(sapphire_rapids(true), "");
  EXPECT_EQ(r.bf16.route, GemmRoute::ours_amx) << r.bf16.reason;
  EXPECT_FALSE(r.bf16.notice);
  EXPECT_EQ(r.fp32.route, GemmRoute::ours_fp32) << r.fp32.reason;
}

TEST(GemmRoute, AmxRefusedByLinuxFailsOverCleanly) {
  const auto r = cpu::choose_gemm_routes(sapphire_rapids(false), "");
  // Intel vdpbf16ps runs at half the FMA rate: fp32 FMA math on bf16-rounded operands, said so.
  EXPECT_EQ(r.bf16.route, GemmRoute::ours_fp32) << r.bf16.reason;
  EXPECT_TRUE(r.bf16.notice);
  EXPECT_NE(r.bf16.reason.find("Operation not permitted"), std::string::npos) << r.bf16.reason;
  EXPECT_EQ(r.fp32.route, GemmRoute::ours_fp32);
  // asking for AMX there is an error that says why
  try {
    cpu::choose_gemm_routes(sapphire_rapids(false), "amx");
    ADD_FAILURE() << "SFT_GEMM=amx accepted without AMX permission";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Operation not permitted"), std::string::npos) << e.what();
  }
  // oneDNN override: its bf16 matmul without AMX
  EXPECT_EQ(cpu::choose_gemm_routes(sapphire_rapids(false), "onednn").bf16.route, GemmRoute::onednn_bf16);
}

TEST(GemmRoute, ZenRunsOurVdpbf16ps) {
  const auto r = cpu::choose_gemm_routes(zen5(), "");
  EXPECT_EQ(r.bf16.route, GemmRoute::ours_bf16) << r.bf16.reason;
  EXPECT_FALSE(r.bf16.notice);
  EXPECT_EQ(r.fp32.route, GemmRoute::ours_fp32);
}

TEST(GemmRoute, MeasuredPeaksDecideOverTheVendorRule) {
  CpuFeatures f = zen5();
  f.vendor = "SomeVendor";
  EXPECT_EQ(cpu::choose_gemm_routes(f, "", {.fma_gflops = 234, .dpbf16_gflops = 468}).bf16.route, GemmRoute::ours_bf16);
  const auto slow = cpu::choose_gemm_routes(f, "", {.fma_gflops = 355, .dpbf16_gflops = 170});
  EXPECT_EQ(slow.bf16.route, GemmRoute::ours_fp32);
  EXPECT_TRUE(slow.bf16.notice);
  EXPECT_NE(slow.bf16.reason.find("170"), std::string::npos) << slow.bf16.reason;
  // an unknown vendor without measurements: fp32 FMA, never slower than fp32
  EXPECT_EQ(cpu::choose_gemm_routes(f, "").bf16.route, GemmRoute::ours_fp32);
}

TEST(GemmRoute, Avx512WithoutBf16FallsBackToFp32FmaWithANotice) {
  const auto r = cpu::choose_gemm_routes(avx512("GenuineIntel"), "");
  EXPECT_EQ(r.bf16.route, GemmRoute::ours_fp32) << r.bf16.reason;
  EXPECT_TRUE(r.bf16.notice);
  EXPECT_NE(r.bf16.reason.find("no AVX512-BF16"), std::string::npos) << r.bf16.reason;
  EXPECT_EQ(r.fp32.route, GemmRoute::ours_fp32);
  // SFT_GEMM=ours there: still fp32 FMA math for bf16, with the notice
  const auto o = cpu::choose_gemm_routes(avx512("AuthenticAMD"), "ours");
  EXPECT_EQ(o.bf16.route, GemmRoute::ours_fp32);
  EXPECT_TRUE(o.bf16.notice);
}

TEST(GemmRoute, Avx2RunsOneDnnFp32) {
  const auto r = cpu::choose_gemm_routes(avx2(), "");
  EXPECT_EQ(r.fp32.route, GemmRoute::onednn_fp32);
  EXPECT_EQ(r.bf16.route, GemmRoute::onednn_fp32);
  EXPECT_TRUE(r.bf16.notice);
  EXPECT_THROW(cpu::choose_gemm_routes(avx2(), "ours"), Error);  // our GEMM needs AVX-512
  EXPECT_THROW(cpu::choose_gemm_routes(avx2(), "amx"), Error);
  EXPECT_EQ(cpu::choose_gemm_routes(avx2(), "onednn").bf16.route, GemmRoute::onednn_fp32);
}

TEST(GemmRoute, EnvOverridesAreValidated) {
  EXPECT_EQ(cpu::choose_gemm_routes(sapphire_rapids(true), "ours").bf16.route, GemmRoute::ours_bf16);
  EXPECT_EQ(cpu::choose_gemm_routes(sapphire_rapids(true), "onednn").bf16.route, GemmRoute::amx);
  EXPECT_EQ(cpu::choose_gemm_routes(sapphire_rapids(true), "amx").bf16.route, GemmRoute::ours_amx);
  EXPECT_EQ(cpu::choose_gemm_routes(sapphire_rapids(true), "onednn").fp32.route, GemmRoute::onednn_fp32);
  EXPECT_EQ(cpu::choose_gemm_routes(sapphire_rapids(true), "amx").fp32.route, GemmRoute::ours_fp32);
  EXPECT_EQ(cpu::choose_gemm_routes(zen5(), "onednn").bf16.route, GemmRoute::onednn_bf16);
  try {
    cpu::choose_gemm_routes(zen5(), "mkl");
    ADD_FAILURE() << "SFT_GEMM=mkl accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'mkl'"), std::string::npos) << e.what();
  }
  try {
    cpu::choose_gemm_routes(zen5(), "amx");
    ADD_FAILURE() << "SFT_GEMM=amx accepted on a CPU without AMX";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no AMX-BF16"), std::string::npos) << e.what();
  }
}

TEST(GemmRoute, ReportNamesEachFamilyAndTheCpu) {
  const CpuFeatures f = sapphire_rapids(true);
  const std::string rep = cpu::gemm_route_report(cpu::choose_gemm_routes(f, ""), f);
  EXPECT_NE(rep.find("bf16 GEMMs: ours-amx"), std::string::npos) << rep;
  EXPECT_NE(rep.find("fp32 GEMMs: ours-avx512-fp32"), std::string::npos) << rep;
  EXPECT_NE(rep.find("mock AVX-512"), std::string::npos) << rep;
  // the backend reports its own routes
  auto be = create_backend("cpu");
  EXPECT_EQ(be->route_report(), cpu::gemm_route_report());
  std::printf("%s\n", be->route_report().c_str());
}

// The MFU peak of each dtype is that of its route's instruction, measured, with a description.
TEST(GemmRoute, PeaksAreSaneAndAmxAboveVdpbf16ps) {
  const CpuFeatures& f = cpu::cpu_features();
  if (!f.avx512) GTEST_SKIP() << "no AVX-512 on " << f.model_name << ": peaks are assumed constants, nothing measured";
  const PeakInfo fp32 = default_peak(Device::cpu, DType::f32, false);
  const PeakInfo bf16 = default_peak(Device::cpu, DType::bf16, false);
  std::printf("fp32 %.0f GFLOP/s: %s\nbf16 %.0f GFLOP/s: %s\n", fp32.gflops, fp32.how.c_str(), bf16.gflops,
              bf16.how.c_str());
  // 2 to 16 cores at 1 to 5 GHz, 32 to 64 FP32 FLOP per cycle per core; a busy machine reads lower.
  EXPECT_GT(fp32.gflops, 5.0);
  EXPECT_LT(fp32.gflops, 16 * 5.0 * 64 * 1.05);
  EXPECT_NE(fp32.how.find("FMA"), std::string::npos) << fp32.how;
  EXPECT_EQ(default_peak_gflops(Device::cpu, DType::f32, false), fp32.gflops);
  if (!f.amx_usable()) GTEST_SKIP() << "no usable AMX-BF16 on " << f.model_name << " (" << f.amx_refusal << ")";
  EXPECT_NE(bf16.how.find("tdpbf16ps"), std::string::npos) << bf16.how;
  const double amx = cpu::measure_peak_gflops_amx(), dp = cpu::measure_peak_gflops_avx512(true);
  std::printf("tile-only tdpbf16ps %.0f, vdpbf16ps %.0f GFLOP/s\n", amx, dp);
  EXPECT_GT(amx, 2 * dp);  // 1024 vs at most 128 FLOP/cycle/core
  EXPECT_LT(bf16.gflops, 16 * 5.0 * 1024 * 1.05);
}

}  // namespace
}  // namespace sft
