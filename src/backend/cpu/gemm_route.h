// Which implementation runs the CPU's GEMMs, per operand precision, decided at run time from the
// CPU's features (cpu_features.h) and SFT_GEMM: a pure rule (choose_gemm_routes) that tests feed
// mocked CpuFeatures, the routes of this process (gemm_routes), and a one-line-per-family report
// for sft bench / sft train. bf16 GEMM semantics are the same on every route: operands rounded to
// bf16 (round to nearest even), products and sums in fp32.
#pragma once
#include <string>
#include <string_view>

#include "backend/cpu/cpu_features.h"

namespace sft::cpu {

enum class GemmRoute {
  ours_amx,     // our GEMM on AMX tiles (tdpbf16ps, gemm_amx.cpp), bf16 only
  amx,          // oneDNN bf16 matmul, which runs AMX tiles (tdpbf16ps) where the CPU has them
  onednn_bf16,  // oneDNN bf16 matmul without AMX (SFT_GEMM=onednn on an AVX512-BF16 CPU)
  ours_bf16,    // our AVX-512 GEMM on vdpbf16ps (gemm_avx512.cpp)
  ours_fp32,    // our AVX-512 GEMM on fp32 FMA; bf16 GEMMs round their operands to bf16 first
  onednn_fp32,  // oneDNN fp32 matmul (CPUs without AVX-512); bf16 GEMMs round operands first
};
const char* gemm_route_name(GemmRoute r);  // "ours-amx", "onednn-amx", "ours-avx512-bf16", ...

struct RouteChoice {
  GemmRoute route = GemmRoute::onednn_fp32;
  std::string reason;  // one line: why this route on this CPU
  bool notice = false; // bf16 requested but no fast bf16 instruction runs it: tell the user once
};

struct GemmRoutes {
  RouteChoice bf16, fp32;
};

// Measured register-only peaks (GFLOP/s, peak_avx512.cpp), 0 when not measured: where both are
// known they decide whether vdpbf16ps beats fp32 FMA, else the vendor rule does (AMD Zen 4/5 run
// vdpbf16ps at twice the FLOP rate of FMA: 777 vs 419 GFLOP/s measured on a 2-core Zen 5; Intel
// cores at half: 170 vs 355 on a 2-core Emerald Rapids).
struct PeakHints {
  double fma_gflops = 0, dpbf16_gflops = 0;
};

// The rule. env is SFT_GEMM: "" (choose), "ours" (our AVX-512 GEMM; vdpbf16ps for bf16), "onednn"
// (oneDNN for both; it picks AMX itself where usable), "amx" (bf16 on our AMX GEMM, fp32 as chosen,
// as "" on an AMX CPU). A value
// the CPU cannot honour (ours without AVX-512, amx without usable AMX) or an unknown one fails
// with SFT_CHECK naming the CPU and the reason.
GemmRoutes choose_gemm_routes(const CpuFeatures& f, std::string_view env, const PeakHints& peaks = {});

// The routes of this process: choose_gemm_routes(cpu_features(), $SFT_GEMM), unless a test has set
// an override (set_gemm_routes_override). Evaluated on every call (tests change SFT_GEMM).
GemmRoutes gemm_routes();
// Tests: the routes every CpuBackend created afterwards uses (nullptr: back to gemm_routes()).
void set_gemm_routes_override(const GemmRoutes* routes);

// "bf16 GEMMs: amx — <reason>\nfp32 GEMMs: ours-avx512-fp32 — <reason>" for this process, with the
// CPU model first.
std::string gemm_route_report();
std::string gemm_route_report(const GemmRoutes& r, const CpuFeatures& f);

}  // namespace sft::cpu
