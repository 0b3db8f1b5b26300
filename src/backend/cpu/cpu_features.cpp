// CPU feature detection: cpuid leaf 7 for AVX-512/BF16/AMX, xgetbv for the OS-enabled state
// components (ZMM: XCR0 bits 5-7; AMX: bits 17-18), and Linux's per-process AMX permission
// (Documentation/arch/x86/xstate.rst: ARCH_REQ_XCOMP_PERM with XFEATURE_XTILEDATA = 18).
#include "backend/cpu/cpu_features.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace sft::cpu {

namespace {

constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

// The first "model name" and "cpu MHz" of /proc/cpuinfo.
void read_cpuinfo(CpuFeatures& f) {
  f.model_name = "unknown CPU";
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  bool name = false, mhz = false;
  while ((!name || !mhz) && std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const size_t v = line.find_first_not_of(" \t", colon + 1);
    const std::string value = v == std::string::npos ? "" : line.substr(v);
    if (!name && line.rfind("model name", 0) == 0) f.model_name = value, name = true;
    if (!mhz && line.rfind("cpu MHz", 0) == 0) f.mhz = std::atof(value.c_str()), mhz = true;
  }
}

CpuFeatures detect() {
  CpuFeatures f;
  read_cpuinfo(f);
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0, &a, &b, &c, &d)) {
    char v[13] = {};
    std::memcpy(v, &b, 4), std::memcpy(v + 4, &d, 4), std::memcpy(v + 8, &c, 4);
    f.vendor = v;
  }
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const unsigned base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
  f.family = int(base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family);
  f.model = int(base_family == 0x6 || base_family == 0xf ? (((a >> 16) & 0xf) << 4) | base_model : base_model);
  const bool osxsave = c & (1u << 27), has_fma = c & (1u << 12), has_avx = c & (1u << 28);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm_os = (xcr0 & 0x6) == 0x6, zmm_os = (xcr0 & 0xe6) == 0xe6, amx_os = (xcr0 & 0x60000) == 0x60000;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const unsigned ebx7 = b, edx7 = d;
  f.avx2 = has_avx && ymm_os && (ebx7 & (1u << 5));
  f.fma = has_fma && ymm_os;
  // F (16), DQ (17), BW (30), VL (31)
  f.avx512 = zmm_os && (ebx7 & (1u << 16)) && (ebx7 & (1u << 17)) && (ebx7 & (1u << 30)) && (ebx7 & (1u << 31));
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = f.avx512 && (a & (1u << 5));
  // AMX-BF16 (EDX 22), AMX-TILE (EDX 24)
  f.amx_bf16 = amx_os && (edx7 & (1u << 22)) && (edx7 & (1u << 24));
  if (f.amx_bf16) {
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0) f.amx_permitted = true;
    else f.amx_refusal = std::string("Linux refused AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM): ") + std::strerror(errno);
  }
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

}  // namespace sft::cpu
