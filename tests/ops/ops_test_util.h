// Shared helpers of the op tests: seeded standard-normal fills.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace sft::test {

// n samples of N(0, 1) from mt19937(seed): the same data on every run and machine.
inline std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace sft::test
