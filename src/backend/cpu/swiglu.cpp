// SwiGLU activation of the LLaMA MLP (HF LlamaMLP: act_fn(gate_proj(x)) * up_proj(x), act = SiLU):
// gu (N, 2*FF) = [gate | up] per row, out (N, FF) = silu(gate) * up with silu(g) = g / (1 + e^-g)
// as torch computes it. The backward writes both halves of dgu (=). Rows are spread over threads;
// on AVX-512 CPUs each row runs the vector twin in swiglu_avx512.cpp (SFT_CPU_ISA=generic turns
// that off, which the op tests use to cover this file's scalar loops).
#include <cmath>
#include <cstdlib>
#include <string_view>

#include "backend/cpu/kernels.h"

namespace sft::cpu {

namespace detail {
void swiglu_forward_row_avx512(float* out, const float* gate, const float* up, int64_t FF);
void swiglu_backward_row_avx512(float* dgate, float* dup, const float* dout, const float* gate,
                                const float* up, int64_t FF);
}  // namespace detail

static bool use_avx512() {
  static const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  const char* isa = std::getenv("SFT_CPU_ISA");
  return cpu && !(isa && std::string_view(isa) == "generic");
}

void swiglu_forward(float* out, const float* gu, int64_t N, int64_t FF) {
  const bool vec = use_avx512();
#pragma omp parallel for schedule(static) if (N * FF > (1 << 14))
  for (int64_t n = 0; n < N; ++n) {
    const float* gate = gu + n * 2 * FF;  // (FF)
    const float* up = gate + FF;          // (FF)
    float* o = out + n * FF;              // (FF)
    if (vec) {
      detail::swiglu_forward_row_avx512(o, gate, up, FF);
      continue;
    }
    for (int64_t f = 0; f < FF; ++f) o[f] = gate[f] / (1.0f + std::exp(-gate[f])) * up[f];
  }
}

// d gate = dout · up · σ(g) (1 + g (1 - σ(g))) ; d up = dout · silu(g)
void swiglu_backward(float* dgu, const float* dout, const float* gu, int64_t N, int64_t FF) {
  const bool vec = use_avx512();
#pragma omp parallel for schedule(static) if (N * FF > (1 << 14))
  for (int64_t n = 0; n < N; ++n) {
    const float* gate = gu + n * 2 * FF;  // (FF)
    const float* up = gate + FF;          // (FF)
    const float* d = dout + n * FF;       // (FF)
    float* dgate = dgu + n * 2 * FF;      // (FF)
    float* dup = dgate + FF;              // (FF)
    if (vec) {
      detail::swiglu_backward_row_avx512(dgate, dup, d, gate, up, FF);
      continue;
    }
    for (int64_t f = 0; f < FF; ++f) {
      const float g = gate[f], sig = 1.0f / (1.0f + std::exp(-g));
      dgate[f] = d[f] * up[f] * sig * (1.0f + g * (1.0f - sig));
      dup[f] = d[f] * (g * sig);
    }
  }
}

}  // namespace sft::cpu
