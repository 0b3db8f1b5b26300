// Token cross-entropy in fp32 (HF LlamaForCausalLM loss, torch F.cross_entropy with
// ignore_index=-100, reduction left to the caller): losses (N) = logsumexp(logits) - logit[target]
// with the row max subtracted, 0 for ignored tokens. The fused variant overwrites logits (N, V)
// with dlogits = (softmax - onehot(target)) * dloss_scale (or writes them rounded to bf16 into a
// separate buffer, the bf16 activations' form). Exponentials are fp32; their sum is
// accumulated in double (torch sums in fp32 lanes: this is a little more accurate for large V and
// costs little). AVX-512 rows live in cross_entropy_avx512.cpp.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string_view>

#include <xmmintrin.h>  // _mm_sfence

#include "backend/cpu/kernels.h"
#include "core/aligned_vector.h"
#include "core/dtype.h"
#include "core/check.h"

namespace sft::cpu {

namespace detail {
float ce_row_lse_avx512(const float* x, int64_t V);
float ce_row_softmax_avx512(float* x, int64_t V, float scale);
float ce_row_softmax_bf16_avx512(const float* x, float* row, int64_t V, float scale, int32_t t, uint16_t* out);
}  // namespace detail

static bool use_avx512() {
  static const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  const char* isa = std::getenv("SFT_CPU_ISA");
  return cpu && !(isa && std::string_view(isa) == "generic");
}

// Checked before any parallel region: an exception must not leave an OpenMP region.
static void check_targets(const int32_t* targets, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] != -100 && (targets[n] < 0 || targets[n] >= V))
      fail("cross_entropy", "target {} at token {} outside vocab {}", targets[n], n, V);
}

static float row_max(const float* x, int64_t V) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t v = 0; v < V; ++v) m = std::max(m, x[v]);
  return m;
}

// logsumexp of one row (V)
static float row_lse(const float* x, int64_t V, bool vec) {
  if (vec) return detail::ce_row_lse_avx512(x, V);
  const float m = row_max(x, V);
  double sum = 0.0;
  for (int64_t v = 0; v < V; ++v) sum += std::exp(x[v] - m);
  return m + float(std::log(sum));
}

// x (V) := softmax(x) * scale in place; returns logsumexp(x)
static float row_softmax(float* x, int64_t V, float scale, bool vec) {
  if (vec) return detail::ce_row_softmax_avx512(x, V, scale);
  const float m = row_max(x, V);
  double sum = 0.0;
  for (int64_t v = 0; v < V; ++v) {
    x[v] = std::exp(x[v] - m);
    sum += x[v];
  }
  const float a = float(scale / sum);
#pragma omp simd
  for (int64_t v = 0; v < V; ++v) x[v] *= a;
  return m + float(std::log(sum));
}

void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N,
                           int64_t V) {
  check_targets(targets, N, V);
  const bool vec = use_avx512();
#pragma omp parallel for schedule(static) if (N * V > (1 << 15))
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * V;  // (V)
    losses[n] = targets[n] == -100 ? 0.0f : row_lse(x, V, vec) - x[targets[n]];
  }
}

void cross_entropy_forward_backward(float* losses, float* logits, const int32_t* targets,
                                    int64_t N, int64_t V, float dloss_scale) {
  check_targets(targets, N, V);
  const bool vec = use_avx512();
#pragma omp parallel for schedule(static) if (N * V > (1 << 15))
  for (int64_t n = 0; n < N; ++n) {
    float* x = logits + n * V;  // (V) logits in, dlogits out
    const int32_t t = targets[n];
    if (t == -100) {
      losses[n] = 0.0f;
      std::fill(x, x + V, 0.0f);
      continue;
    }
    const float xt = x[t];
    losses[n] = row_softmax(x, V, dloss_scale, vec) - xt;
    x[t] -= dloss_scale;
  }
}

void cross_entropy_forward_backward_bf16(float* losses, const float* logits, const int32_t* targets, int64_t N,
                                         int64_t V, float dloss_scale, uint16_t* dlogits16) {
  check_targets(targets, N, V);
  const bool vec = use_avx512();
#pragma omp parallel if (N * V > (1 << 15))
  {
    // the fp32 dlogits of one row (V) in L2: the logits stay clean (no write-back to memory)
    thread_local AlignedVector<float> row;
    if (row.size() < size_t(V)) row.resize(size_t(V));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* x = logits + n * V;  // (V)
      uint16_t* d = dlogits16 + n * V;  // (V)
      const int32_t t = targets[n];
      if (t == -100) {
        losses[n] = 0.0f;
        std::fill(d, d + V, uint16_t(0));
        continue;
      }
      if (vec) {
        losses[n] = detail::ce_row_softmax_bf16_avx512(x, row.data(), V, dloss_scale, t, d) - x[t];
        continue;
      }
      std::copy(x, x + V, row.data());  // the same fp32 steps as the in-place kernel, then rounded
      losses[n] = row_softmax(row.data(), V, dloss_scale, vec) - x[t];
      row[size_t(t)] -= dloss_scale;
      convert_f32_to_bf16(row.data(), d, size_t(V));
    }
    _mm_sfence();  // the streamed rows, before the GEMMs read them
  }
}

}  // namespace sft::cpu
