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

// The transposing rounding (AVX-512 16x16 tiles where present) equals the scalar rounding of the
// transpose, element for element, on shapes with partial tiles in both directions and on shapes
// large enough to be split over threads.
TEST(DType, TransposedBf16MatchesScalar) {
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.0f, 3.0f);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {16, 16}, {17, 33}, {5, 100}, {100, 5}, {40, 4100},
                            {64, 64}, {333, 257}, {1024, 96}}) {
    std::vector<float> x(size_t(rows * cols));
    for (auto& v : x) v = n(rng);
    std::vector<uint16_t> t(x.size(), 0xffff), t2(x.size(), 0xffff), plain(x.size(), 0xffff);
    convert_f32_to_bf16_transposed(x.data(), rows, cols, t.data());
    convert_f32_to_bf16_transposed(x.data(), rows, cols, t2.data(), plain.data());  // both in one pass
    EXPECT_EQ(t, t2);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(t[size_t(c * rows + r)], f32_to_bf16(x[size_t(r * cols + c)]))
            << "rows " << rows << " cols " << cols << " at (" << r << ", " << c << ")";
        ASSERT_EQ(plain[size_t(r * cols + c)], f32_to_bf16(x[size_t(r * cols + c)]));
      }
  }
}

// The bf16 transpose moves every 16-bit pattern unchanged (NaNs, including signalling payloads,
// infinities, denormals), on the same ragged and thread-split shapes as above, with a 4 MB+ shape
// for the streaming-store path.
TEST(DType, Bf16TransposeIsExact) {
  std::mt19937 rng(12);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {16, 16}, {17, 33}, {5, 100}, {100, 5}, {40, 4100},
                            {64, 64}, {333, 257}, {1024, 96}, {2048, 1056}}) {
    std::vector<uint16_t> x(size_t(rows * cols));
    for (auto& v : x) v = uint16_t(rng());
    std::vector<uint16_t> t(x.size(), 0xabcd);
    transpose_bf16(x.data(), rows, cols, t.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(t[size_t(c * rows + r)], x[size_t(r * cols + c)])
            << "rows " << rows << " cols " << cols << " at (" << r << ", " << c << ")";
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
