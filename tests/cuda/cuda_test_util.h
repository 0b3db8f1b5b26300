// Helpers for the CUDA-vs-CPU tests: skip when no usable GPU, the same random inputs on both
// backends, NaN-poisoned GPU outputs, download, and the normalised error max|gpu - cpu| / max|cpu|
// (NaN counts as infinite, so an unwritten output fails).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace sft::cuda_test {

// The same tensor on the CPU backend (host vector) and on the GPU (device memory).
// Not to be copied: cpu points into host (moving is fine).
struct Mirror {
  std::vector<float> host;
  Tensor cpu, gpu;
};

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = cuda_unavailable_reason();
    if (!why.empty()) GTEST_SKIP() << "no GPU check here: " << why;
    gpu_ = create_backend("cuda");
    cpu_ = create_backend("cpu");
    seed_ = std::random_device{}();
    rng_.seed(seed_);
    std::printf("seed %u (inputs are fresh random numbers each run)\n", seed_);
  }
  void TearDown() override {
    for (void* p : owned_) gpu_->dealloc(p);
    owned_.clear();
  }

  std::vector<float> randn(size_t n, float sd = 1.0f) {
    std::normal_distribution<float> d(0.0f, sd);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }
  std::vector<int32_t> randint(size_t n, int32_t lo, int32_t hi) {  // [lo, hi]
    std::uniform_int_distribution<int32_t> d(lo, hi);
    std::vector<int32_t> v(n);
    for (int32_t& x : v) x = d(rng_);
    return v;
  }

  Tensor gpu_alloc(std::initializer_list<int64_t> dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    void* p = gpu_->alloc(size_t(n) * 4);
    owned_.push_back(p);
    return Tensor(p, DType::f32, dims, Device::cuda);
  }
  // Input (or accumulated-into output): the same values on both sides.
  Mirror mirror(const std::vector<float>& values, std::initializer_list<int64_t> dims) {
    Mirror m{values, {}, gpu_alloc(dims)};
    m.cpu = Tensor(m.host.data(), DType::f32, dims);
    EXPECT_EQ(size_t(m.gpu.numel()), values.size());
    gpu_->copy(m.gpu.data, values.data(), values.size() * 4);
    return m;
  }
  // Written output: zeros on the CPU, NaN on the GPU (every element must be written).
  Mirror output(std::initializer_list<int64_t> dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    Mirror m = mirror(std::vector<float>(size_t(n), 0.0f), dims);
    poison(m.gpu);
    return m;
  }
  void poison(const Tensor& t) {
    const std::vector<float> nan(size_t(t.numel()), std::numeric_limits<float>::quiet_NaN());
    gpu_->copy(t.data, nan.data(), nan.size() * 4);
  }
  std::vector<float> download(const Tensor& t) {
    std::vector<float> v(size_t(t.numel()));
    gpu_->copy(v.data(), t.data, v.size() * 4);
    return v;
  }
  // max|gpu - cpu| / max|cpu| over the mirror, after the op ran on both sides.
  double err(const Mirror& m) {
    const std::vector<float> got = download(m.gpu);
    double d = 0, ref = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double e = std::fabs(double(got[i]) - double(m.host[i]));
      d = std::max(d, std::isnan(e) ? INFINITY : e);
      ref = std::max(ref, std::fabs(double(m.host[i])));
    }
    return d / std::max(ref, 1e-30);
  }

  std::unique_ptr<Backend> gpu_, cpu_;
  std::mt19937 rng_;
  unsigned seed_ = 0;
  std::vector<void*> owned_;
};

}  // namespace sft::cuda_test
