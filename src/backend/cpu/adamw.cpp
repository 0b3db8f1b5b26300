// AdamW step, exactly torch.optim.AdamW's single-tensor path (amsgrad off, maximize off):
// bias corrections and lr products in double (Python floats), rounded to fp32 scalars where torch
// passes them to fp32 tensor ops, and the same operation order per element:
// The gradient enters scaled by grad_scale (clipping), one fp32 product as torch's in-place mul_.
//   p *= 1-lr·wd ; m = m·b1 + (1-b1)·g ; v = v·b2 + (1-b2)·g·g ; p += -lr/bc1 · m / (√v/√bc2 + eps)
// On AVX-512 CPUs fixed 16K-element blocks run adamw_avx512.cpp (bit-identical: same roundings).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string_view>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/kernels.h"

namespace sft::cpu {

namespace detail {
void adamw_range_avx512(float* param, const float* grad, float* m, float* v, int64_t n,
                        const float* s);
}  // namespace detail

static bool use_avx512() {
  const char* isa = std::getenv("SFT_CPU_ISA");
  return cpu_features().avx512 && !(isa && std::string_view(isa) == "generic");
}

void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n,
                const AdamWParams& p) {
  const double lr = p.lr, b1 = p.beta1, b2 = p.beta2;
  const float decay = float(1.0 - lr * double(p.weight_decay));
  const double bias_c1 = 1.0 - std::pow(b1, double(p.step));
  const double bias_c2 = 1.0 - std::pow(b2, double(p.step));
  const float neg_step_size = float(-(lr / bias_c1));
  const float bias_c2_sqrt = float(std::sqrt(bias_c2));
  const float b1f = float(b1), b2f = float(b2), one_b1 = float(1.0 - b1), one_b2 = float(1.0 - b2);
  const float eps = p.eps, gs = p.grad_scale;
  if (use_avx512()) {
    const float s[9] = {decay, b1f, one_b1, b2f, one_b2, bias_c2_sqrt, eps, neg_step_size, p.grad_scale};
    constexpr int64_t kBlock = 1 << 14;
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (blocks > 4)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t i0 = b * kBlock, len = std::min(n, i0 + kBlock) - i0;
      detail::adamw_range_avx512(param + i0, grad + i0, m + i0, v + i0, len, s);
    }
    return;
  }
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * gs;
    const float pi = param[i] * decay;
    const float mi = m[i] * b1f + one_b1 * g;
    const float vi = v[i] * b2f + one_b2 * g * g;
    const float denom = std::sqrt(vi) / bias_c2_sqrt + eps;
    m[i] = mi;
    v[i] = vi;
    param[i] = pi + neg_step_size * mi / denom;
  }
}

}  // namespace sft::cpu
