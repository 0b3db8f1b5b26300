// What the CPU can run, read once at run time (cpuid, xgetbv, and Linux's permission for AMX tile
// state): every CPU kernel family dispatches on this, never on the build machine. Tests build
// CpuFeatures by hand to check routing rules on CPUs this machine is not.
#pragma once
#include <string>

namespace sft::cpu {

struct CpuFeatures {
  bool avx2 = false, fma = false;                // AVX2 + FMA3
  bool avx512 = false;                           // AVX-512 F, BW, DQ, VL (our GEMM's ISA)
  bool avx512_bf16 = false;                      // vdpbf16ps
  bool amx_bf16 = false;                         // AMX-TILE + AMX-BF16 in cpuid and XCR0 (OS support)
  bool amx_permitted = false;                    // Linux granted XTILEDATA to this process
  std::string amx_refusal;                       // why not, when amx_bf16 but not permitted
  std::string model_name;                        // /proc/cpuinfo "model name", for reports
  std::string vendor;                            // cpuid leaf 0: "GenuineIntel", "AuthenticAMD", ...
  int family = 0, model = 0;                     // cpuid leaf 1 display family / model
  double mhz = 0;                                // /proc/cpuinfo "cpu MHz" (the TSC clock in a VM), 0 unknown
  bool amx_usable() const { return amx_bf16 && amx_permitted; }
};

// The running CPU's features, detected on first call (which also asks Linux for AMX tile state,
// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), once per process).
const CpuFeatures& cpu_features();

}  // namespace sft::cpu
