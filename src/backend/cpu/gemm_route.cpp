// The GEMM routing rule of the CPU backend (gemm_route.h): our AMX GEMM for bf16 where usable, our
// vdpbf16ps GEMM where that instruction beats fp32 FMA, fp32 FMA math on bf16-rounded operands
// where it does not, oneDNN fp32 on CPUs without AVX-512; SFT_GEMM overrides, validated.
#include "backend/cpu/gemm_route.h"

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>

#include "backend/cpu/gemm.h"
#include "core/check.h"

namespace sft::cpu {

namespace {

std::atomic<const GemmRoutes*> g_override{nullptr};

// Whether vdpbf16ps delivers more FLOP/s than fp32 FMA on this CPU, and why we think so.
bool dpbf16_beats_fma(const CpuFeatures& f, const PeakHints& p, std::string* why) {
  if (p.fma_gflops > 0 && p.dpbf16_gflops > 0) {
    // A margin: below it the fp32 route (no VNNI pair packing) is as fast and rounds identically.
    const bool wins = p.dpbf16_gflops > 1.15 * p.fma_gflops;
    *why = fmt::format("measured vdpbf16ps {:.0f} vs fp32 FMA {:.0f} GFLOP/s", p.dpbf16_gflops, p.fma_gflops);
    return wins;
  }
  if (f.vendor == "AuthenticAMD" || f.vendor == "HygonGenuine") {
    *why = "AMD Zen 4/5 run vdpbf16ps at twice the FLOP rate of fp32 FMA (vendor rule)";
    return true;
  }
  *why = f.vendor == "GenuineIntel"
             ? "Intel cores run vdpbf16ps at half the FLOP rate of fp32 FMA (vendor rule; 170 vs 355 GFLOP/s "
               "measured on a 2-core Emerald Rapids)"
             : fmt::format("vendor '{}' unknown and no measured peaks: fp32 FMA assumed faster", f.vendor);
  return false;
}

RouteChoice choose_fp32(const CpuFeatures& f) {
  if (f.avx512) return {GemmRoute::ours_fp32, "AVX-512 F/BW/DQ/VL: our GEMM on vfmadd231ps", false};
  return {GemmRoute::onednn_fp32,
          f.avx2 ? "no AVX-512: oneDNN fp32 matmul (AVX2/FMA kernels)" : "no AVX-512: oneDNN fp32 matmul", false};
}

RouteChoice choose_bf16(const CpuFeatures& f, const PeakHints& peaks) {
  std::string amx_note;
  // Ours rather than oneDNN 2.6's AMX kernels: the same GEMM speed on the model's shapes, faster
  // on the LM head, and operands packed from the layouts the model holds (no transposed or rounded
  // copies): base bf16 +12-14% tokens/s on a 2-core Xeon (bench/README.md, fifth AMX session).
  if (f.amx_usable())
    return {GemmRoute::ours_amx, "AMX-BF16 tiles usable (Linux granted tile state): our AMX GEMM, tdpbf16ps", false};
  if (f.amx_bf16)
    amx_note = fmt::format(" (AMX-BF16 present but unusable: {})",
                           f.amx_refusal.empty() ? std::string("Linux did not grant tile state") : f.amx_refusal);
  if (f.avx512_bf16) {
    std::string why;
    if (dpbf16_beats_fma(f, peaks, &why)) return {GemmRoute::ours_bf16, "AVX512-BF16: our GEMM on vdpbf16ps, " + why + amx_note, false};
    return {GemmRoute::ours_fp32,
            "bf16 operands rounded to bf16, then fp32 FMA math (same results): " + why + amx_note, true};
  }
  if (f.avx512)
    return {GemmRoute::ours_fp32,
            "no AVX512-BF16: bf16 GEMMs round operands to bf16 and run fp32 FMA (same results, fp32 speed)" + amx_note,
            true};
  return {GemmRoute::onednn_fp32,
          "no AVX-512: bf16 GEMMs round operands to bf16 and run oneDNN fp32 matmul (same results, fp32 speed)", true};
}

}  // namespace

const char* gemm_route_name(GemmRoute r) {
  switch (r) {
    case GemmRoute::ours_amx: return "ours-amx";
    case GemmRoute::amx: return "onednn-amx";
    case GemmRoute::onednn_bf16: return "onednn-bf16";
    case GemmRoute::ours_bf16: return "ours-avx512-bf16";
    case GemmRoute::ours_fp32: return "ours-avx512-fp32";
    case GemmRoute::onednn_fp32: return "onednn-fp32";
  }
  return "?";
}

GemmRoutes choose_gemm_routes(const CpuFeatures& f, std::string_view env, const PeakHints& peaks) {
  SFT_CHECK(env.empty() || env == "ours" || env == "onednn" || env == "amx", "cpu",
            "SFT_GEMM is '{}', expected 'ours', 'onednn' or 'amx' (or unset)", env);
  GemmRoutes r{choose_bf16(f, peaks), choose_fp32(f)};
  if (env == "ours") {
    SFT_CHECK(f.avx512, "cpu", "SFT_GEMM=ours: our GEMM needs AVX-512 F/BW/DQ/VL, which this CPU ({}) lacks",
              f.model_name);
    r.fp32 = {GemmRoute::ours_fp32, "SFT_GEMM=ours: our GEMM on vfmadd231ps", false};
    r.bf16 = f.avx512_bf16 ? RouteChoice{GemmRoute::ours_bf16, "SFT_GEMM=ours: our GEMM on vdpbf16ps", false}
                           : RouteChoice{GemmRoute::ours_fp32,
                                         "SFT_GEMM=ours without AVX512-BF16: operands rounded to bf16, fp32 FMA", true};
  } else if (env == "onednn") {
    r.fp32 = {GemmRoute::onednn_fp32, "SFT_GEMM=onednn: oneDNN fp32 matmul", false};
    if (f.amx_usable()) r.bf16 = {GemmRoute::amx, "SFT_GEMM=onednn: oneDNN bf16 matmul, AMX tiles usable", false};
    else if (f.avx512_bf16) r.bf16 = {GemmRoute::onednn_bf16, "SFT_GEMM=onednn: oneDNN bf16 matmul (vdpbf16ps)", false};
    else r.bf16 = {GemmRoute::onednn_fp32, "SFT_GEMM=onednn without AVX512-BF16: operands rounded to bf16, oneDNN fp32", true};
  } else if (env == "amx") {
    SFT_CHECK(f.amx_usable(), "cpu", "SFT_GEMM=amx: AMX-BF16 is not usable on this CPU ({}): {}", f.model_name,
              !f.amx_bf16 ? std::string("no AMX-BF16 tiles (cpuid/XCR0)") : f.amx_refusal);
    r.bf16 = {GemmRoute::ours_amx, "SFT_GEMM=amx: our AMX GEMM, tdpbf16ps", false};
  }
  return r;
}

GemmRoutes gemm_routes() {
  if (const GemmRoutes* o = g_override.load()) return *o;
  const CpuFeatures& f = cpu_features();
  const char* env = std::getenv("SFT_GEMM");
  PeakHints peaks;
  // Only a CPU the vendor rule does not know is measured (~0.7 s, once per process).
  if (f.avx512_bf16 && !f.amx_usable() && f.vendor != "GenuineIntel" && f.vendor != "AuthenticAMD" &&
      f.vendor != "HygonGenuine") {
    static const PeakHints measured{measure_peak_gflops_avx512(false), measure_peak_gflops_avx512(true)};
    peaks = measured;
  }
  return choose_gemm_routes(f, env ? env : "", peaks);
}

void set_gemm_routes_override(const GemmRoutes* routes) { g_override.store(routes); }

std::string gemm_route_report(const GemmRoutes& r, const CpuFeatures& f) {
  return fmt::format("CPU {} ({}, family {} model {})\nbf16 GEMMs: {} - {}\nfp32 GEMMs: {} - {}", f.model_name,
                     f.vendor.empty() ? "unknown vendor" : f.vendor, f.family, f.model, gemm_route_name(r.bf16.route),
                     r.bf16.reason, gemm_route_name(r.fp32.route), r.fp32.reason);
}

std::string gemm_route_report() { return gemm_route_report(gemm_routes(), cpu_features()); }

}  // namespace sft::cpu
