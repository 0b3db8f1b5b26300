// RMSNorm forward/backward (HF LlamaRMSNorm in fp32): rstd = 1/sqrt(mean(x²) + eps),
// out = (x * rstd) * w. mean(x²) is accumulated in float over vector lanes, as torch's fp32
// reduction does. The backward accumulates into dx (it feeds the residual stream) and into dw
// through per-row-block partials that are summed in block order: bit-reproducible for any
// number of threads, since the blocks depend only on N. The residual-fused forward first writes
// res = x + y for a row and then runs the very same row routine on it, so it is bit-identical to
// the add followed by rms_norm_forward. On AVX-512 CPUs the element-wise passes run
// rms_norm_avx512.cpp (bit-identical); the row sums stay here (SFT_CPU_ISA=generic: all here).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/kernels.h"

namespace sft::cpu {

namespace detail {
void rms_norm_scale_row_avx512(float* o, const float* xr, const float* w, int64_t C, float r);
void rms_norm_backward_row_avx512(float* d, float* pw, const float* g, const float* xr,
                                  const float* w, int64_t C, float r, float coef);
}  // namespace detail

namespace {

bool use_avx512() {
  const char* isa = std::getenv("SFT_CPU_ISA");
  return cpu_features().avx512 && !(isa && std::string_view(isa) == "generic");
}

// One row: o (C) = xr * r * w, returns r = 1/sqrt(mean(xr²) + eps). Not inlined, so both
// forwards run one copy of this code and round identically.
[[gnu::noinline]] float rms_norm_row(float* o, const float* xr, const float* w, int64_t C,
                                     float eps, bool vec) {
  float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
  for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
  const float r = 1.0f / std::sqrt(ss / float(C) + eps);
  if (vec) {
    detail::rms_norm_scale_row_avx512(o, xr, w, C, r);
    return r;
  }
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) o[c] = (xr[c] * r) * w[c];
  return r;
}

}  // namespace

void rms_norm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N,
                      int64_t C, float eps) {
  const bool vec = use_avx512();
#pragma omp parallel for schedule(static) if (N * C > (1 << 14))
  for (int64_t n = 0; n < N; ++n) rstd[n] = rms_norm_row(out + n * C, x + n * C, w, C, eps, vec);
}

// res may alias x or y: each element is read before it is written, by the same thread.
void residual_rms_norm_forward(float* res, float* out, float* rstd, const float* x, const float* y,
                               const float* w, int64_t N, int64_t C, float eps) {
  const bool vec = use_avx512();
#pragma omp parallel for schedule(static) if (N * C > (1 << 14))
  for (int64_t n = 0; n < N; ++n) {
    float* rr = res + n * C;  // (C), still in L1 when the row routine reads it back
    const float* xr = x + n * C;
    const float* yr = y + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) rr[c] = xr[c] + yr[c];
    rstd[n] = rms_norm_row(out + n * C, rr, w, C, eps, vec);
  }
}

// y = x r w, r = (mean(x²)+eps)^-1/2:  dx += r w dy - x r³/C Σ_c(dy w x) ;  dw += Σ_n dy x r
void rms_norm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                       const float* rstd, int64_t N, int64_t C) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(64, (N + 15) / 16));
  const int64_t rows = (N + blocks - 1) / blocks;
  std::vector<float> partial(size_t(blocks * C), 0.0f);  // (blocks, C) partial sums of dw
  const bool vec = use_avx512();
#pragma omp parallel for schedule(static) if (N * C > (1 << 14))
  for (int64_t b = 0; b < blocks; ++b) {
    float* pw = partial.data() + b * C;
    for (int64_t n = b * rows; n < std::min(N, (b + 1) * rows); ++n) {
      const float* g = dout + n * C;  // (C)
      const float* xr = x + n * C;    // (C)
      float* d = dx + n * C;          // (C)
      const float r = rstd[n];
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c) dot += g[c] * w[c] * xr[c];
      const float coef = dot * r * r * r / float(C);
      if (vec) {
        detail::rms_norm_backward_row_avx512(d, pw, g, xr, w, C, r, coef);
        continue;
      }
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        d[c] += r * (w[c] * g[c]) - coef * xr[c];
        pw[c] += g[c] * (xr[c] * r);
      }
    }
  }
#pragma omp parallel for schedule(static) if (blocks * C > (1 << 14))
  for (int64_t c = 0; c < C; ++c) {
    float s = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) s += partial[size_t(b * C + c)];
    dw[c] += s;
  }
}

}  // namespace sft::cpu
