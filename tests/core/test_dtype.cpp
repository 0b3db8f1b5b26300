// dtype conversions: bf16 rounding is round-to-nearest-even as torch's .to(torch.bfloat16), the
// AVX512-BF16 bulk path equals the scalar one bit for bit, f16 round trips and special values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"

namespace sft {

static uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(DType, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up to even.
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  // just above halfway rounds up
  EXPECT_EQ(f32_to_bf16(from_bits(bits(1.0f + 0x1p-8f) + 1)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // the largest float rounds to +inf in bf16 (torch gives inf too)
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
}

TEST(DType, BulkBf16MatchesScalar) {
  std::mt19937 rng(7);
  std::vector<float> x(100003);
  for (auto& v : x) v = from_bits(rng());  // every bit pattern class, NaNs included
  std::vector<uint16_t> bulk(x.size());
  convert_f32_to_bf16(x.data(), bulk.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(bulk[i])));
    } else {
      ASSERT_EQ(bulk[i], f32_to_bf16(x[i])) << "at " << i << " value " << x[i];
    }
  }
}

TEST(DType, F16RoundTripAndRounding) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN payloads
    ASSERT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << std::hex << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);         // smallest subnormal
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);         // rounds past 65504 -> inf
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);  // tie to even
}

}  // namespace sft
