// Reductions over flat fp32 buffers: Σ x² in double (gradient-norm clipping). Fixed blocks of
// 64K elements are summed independently and then added in block order, so the result is
// bit-identical for any thread count.
#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/kernels.h"

namespace sft::cpu {

namespace detail {
double sum_squares_block_avx512(const float* x, int64_t n);
}  // namespace detail

double sum_squares(const float* x, int64_t n) {
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(size_t(std::max<int64_t>(blocks, 1)), 0.0);  // (blocks)
  static const bool avx512 = [] {
    const char* isa = std::getenv("SFT_CPU_ISA");
    return cpu_features().avx512 && !(isa && std::string_view(isa) == "generic");
  }();
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i0 = b * kBlock, i1 = std::min(n, i0 + kBlock);
    if (avx512) {
      partial[size_t(b)] = detail::sum_squares_block_avx512(x + i0, i1 - i0);
      continue;
    }
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = i0; i < i1; ++i) s += double(x[i]) * double(x[i]);
    partial[size_t(b)] = s;
  }
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) total += partial[size_t(b)];
  return total;
}

}  // namespace sft::cpu
