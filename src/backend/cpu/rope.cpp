// Rotary position embedding, rotate-half form (HF apply_rotary_pos_emb), in place on the q and k
// heads of qkv (N, QKV); v is untouched. cos, sin (P, HS/2) are indexed by each token's position
// (positions restart at 0 per packed sequence). The backward applies the transposed rotation
// (angle -θ), which maps d(rotated) to d(unrotated) since the rotation is orthogonal. On AVX-512
// CPUs each token runs rope_avx512.cpp (bit-identical; SFT_CPU_ISA=generic keeps the loops here).
#include <cstdlib>
#include <string_view>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/kernels.h"
#include "core/check.h"

namespace sft::cpu {

namespace detail {
void rope_row_avx512(float* x, const float* cr, const float* sr, int heads, int HS, float sign);
}  // namespace detail

static bool use_avx512() {
  const char* isa = std::getenv("SFT_CPU_ISA");
  return cpu_features().avx512 && !(isa && std::string_view(isa) == "generic");
}

// sign = +1: (a, b) -> (a cos - b sin, b cos + a sin) ; sign = -1: the inverse rotation.
static void rope_apply(float* qkv, const int32_t* positions, const float* cos, const float* sin,
                       int64_t N, int NH, int NKV, int HS, float sign) {
  SFT_ASSERT(HS % 2 == 0);
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
  const int half = HS / 2;
  const bool vec = use_avx512();
#pragma omp parallel for schedule(static) if (N * QKV > (1 << 15))
  for (int64_t n = 0; n < N; ++n) {
    const float* cr = cos + int64_t(positions[n]) * half;  // (HS/2)
    const float* sr = sin + int64_t(positions[n]) * half;  // (HS/2)
    if (vec) {
      detail::rope_row_avx512(qkv + n * QKV, cr, sr, NH + NKV, HS, sign);
      continue;
    }
    for (int h = 0; h < NH + NKV; ++h) {
      float* x = qkv + n * QKV + int64_t(h) * HS;  // (HS) one q or k head
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const float a = x[i], b = x[i + half], c = cr[i], s = sign * sr[i];
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
      }
    }
  }
}

void rope_forward(float* qkv, const int32_t* positions, const float* cos, const float* sin,
                  int64_t N, int NH, int NKV, int HS) {
  rope_apply(qkv, positions, cos, sin, N, NH, NKV, HS, 1.0f);
}

void rope_backward(float* dqkv, const int32_t* positions, const float* cos, const float* sin,
                   int64_t N, int NH, int NKV, int HS) {
  rope_apply(dqkv, positions, cos, sin, N, NH, NKV, HS, -1.0f);
}

}  // namespace sft::cpu
