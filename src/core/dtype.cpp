// Scalar and bulk dtype conversions. Bulk loops are plain C++ that GCC vectorises; they run on
// weights once per load/save and on GEMM operands once per call, far from the hot path.
#include "core/dtype.h"

#include <algorithm>
#include <cmath>

namespace sft {

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do { mant <<= 1; ++e; } while (!(mant & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | mant << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00;          // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00;         // overflow -> inf (rounds past 65504)
  if (a < 0x38800000u) {                              // subnormal or zero in half
    if (a < 0x33000000u) return sign;                 // underflow to zero
    uint32_t mant = (a & 0x7fffff) | 0x800000;
    int shift = 126 - int(a >> 23);                   // 14..24
    uint32_t half_mant = mant >> (shift);
    uint32_t rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_mant & 1))) ++half_mant;
    return sign | uint16_t(half_mant);
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u);         // round to nearest even at bit 13
  return sign | uint16_t(((r >> 13) - (112u << 10)) & 0x7fff);
}

namespace detail {
void convert_f32_to_bf16_avx512(const float* src, uint16_t* dst, size_t n);
void transpose_bf16_avx512(const uint16_t* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                           int64_t c1, uint16_t* dst);
void transpose_f32_to_bf16_avx512(const float* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                                  int64_t c0, int64_t c1, uint16_t* dst);
}

void convert_f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  // Blocks of 64K elements spread over threads; tiny inputs stay on the calling thread.
  const size_t block = 1 << 16;
  const int64_t blocks = int64_t((n + block - 1) / block);
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    size_t i0 = size_t(b) * block, i1 = std::min(n, i0 + block);
    if (has_avx512) {
      detail::convert_f32_to_bf16_avx512(src + i0, dst + i0, i1 - i0);
    } else {
      for (size_t i = i0; i < i1; ++i) dst[i] = f32_to_bf16(src[i]);
    }
  }
}

// The walk of both transposing conversions: strips of 32 source rows (32 destination columns:
// one 64-byte store per destination row) spread over threads, each walked in blocks of 2048
// columns (256 KB of fp32 source, which stays in L2); block(r0, r1, c0, c1) does one block.
template <class Block>
static void for_transpose_blocks(int64_t rows, int64_t cols, Block&& block) {
  constexpr int64_t kRows = 32, kCols = 2048;
  const int64_t strips = (rows + kRows - 1) / kRows;
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
  for (int64_t b = 0; b < strips; ++b) {
    const int64_t r0 = b * kRows, r1 = std::min(rows, r0 + kRows);
    for (int64_t c0 = 0; c0 < cols; c0 += kCols) block(r0, r1, c0, std::min(cols, c0 + kCols));
  }
}

void convert_f32_to_bf16_transposed(const float* src, int64_t rows, int64_t cols, uint16_t* dst,
                                    uint16_t* plain) {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  // The plain rounding of a block first, then its 32x16 transposing tiles, so src is read from
  // memory once. (Storing both from the same tiles, 32 half-line plain stores beside 16
  // transposed ones, ran 1.4x-2.3x slower than two passes on a 2-core Xeon.)
  for_transpose_blocks(rows, cols, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    if (has_avx512) {
      if (plain)
        for (int64_t r = r0; r < r1; ++r)
          detail::convert_f32_to_bf16_avx512(src + r * cols + c0, plain + r * cols + c0, size_t(c1 - c0));
      detail::transpose_f32_to_bf16_avx512(src, rows, cols, r0, r1, c0, c1, dst);
      return;
    }
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c1; ++c) {
        const uint16_t v = f32_to_bf16(src[r * cols + c]);
        dst[c * rows + r] = v;
        if (plain) plain[r * cols + c] = v;
      }
  });
}

void transpose_bf16(const uint16_t* src, int64_t rows, int64_t cols, uint16_t* dst) {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  for_transpose_blocks(rows, cols, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    if (has_avx512) return detail::transpose_bf16_avx512(src, rows, cols, r0, r1, c0, c1, dst);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
  });
}

void convert_bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void convert_to_f32(const void* src, DType src_dtype, float* dst, size_t n) {
  switch (src_dtype) {
    case DType::f32: std::memcpy(dst, src, n * 4); break;
    case DType::bf16: convert_bf16_to_f32(static_cast<const uint16_t*>(src), dst, n); break;
    case DType::f16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      break;
    }
  }
}

void convert_from_f32(const float* src, void* dst, DType dst_dtype, size_t n) {
  switch (dst_dtype) {
    case DType::f32: std::memcpy(dst, src, n * 4); break;
    case DType::bf16: convert_f32_to_bf16(src, static_cast<uint16_t*>(dst), n); break;
    case DType::f16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      break;
    }
  }
}

}  // namespace sft
