// Element types: f32 (master weights, activations on CPU), bf16 (GEMM operands, saved weights),
// f16 (accepted on load). Conversions round to nearest even, as torch's .to(torch.bfloat16).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace sft {

enum class DType : uint8_t { f32, bf16, f16 };

inline size_t dtype_size(DType dt) { return dt == DType::f32 ? 4 : 2; }

// Names as safetensors writes them ("F32", "BF16", "F16").
inline std::string_view dtype_name(DType dt) {
  switch (dt) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
  }
  return "?";
}

struct bf16 {
  uint16_t bits;
};

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                          // round to nearest even
  return uint16_t(u >> 16);
}

// IEEE half -> float (loading F16 checkpoints) and back (saving when asked).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Bulk conversions (vectorised where the CPU allows; see core/dtype.cpp).
void convert_f32_to_bf16(const float* src, uint16_t* dst, size_t n);
void convert_bf16_to_f32(const uint16_t* src, float* dst, size_t n);
// dst (cols, rows) = bf16 rounding of src (rows, cols)ᵀ, both row-major and dense, rounding as
// f32_to_bf16: the operand of a GEMM that wants the transpose in bf16 (a weight gradient's
// doutᵀ on AMX), made in one pass instead of a rounding pass and a transposing one. plain, when
// given, receives the untransposed rounding (rows, cols) in the same pass (dout for dx as well).
void convert_f32_to_bf16_transposed(const float* src, int64_t rows, int64_t cols, uint16_t* dst,
                                    uint16_t* plain = nullptr);
// dst (cols, rows) = src (rows, cols)ᵀ for bf16 values, both row-major and dense: the transposed
// GEMM operand of a weight gradient when the activation or gradient is already stored in bf16.
void transpose_bf16(const uint16_t* src, int64_t rows, int64_t cols, uint16_t* dst);
// Any supported dtype -> f32 / f32 -> any supported dtype.
void convert_to_f32(const void* src, DType src_dtype, float* dst, size_t n);
void convert_from_f32(const float* src, void* dst, DType dst_dtype, size_t n);

}  // namespace sft
