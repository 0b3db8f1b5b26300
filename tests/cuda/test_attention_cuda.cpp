// CUDA FlashAttention (backend/cuda/attention_*.cu) against the CPU reference (cpu::ref, double
// accumulation): out, lse and all of dqkv for MHA/GQA/MQA, HS 64 and 128 (tensor cores with bf16
// operands) and odd HS (FMA kernels), packed rows of uneven lengths incl. 1 and 0, fp32 and bf16.
// Fresh random inputs each run (seed printed on failure), outputs poisoned with NaN before each
// launch. Skipped, saying why, when no CUDA device is usable (as on the build machines).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "backend/cpu/kernels.h"
#include "backend/cuda/attention.cuh"
#include "core/check.h"

namespace sft {
namespace {

// Why the GPU tests cannot run here, or "" when a device is usable.
std::string no_gpu_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(e);
  if (n == 0) return "cudaGetDeviceCount found no device";
  return "";
}

// Owning device buffer of n elements of T.
template <typename T>
struct DeviceBuffer {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    if (cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) p = nullptr;
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  bool upload(const std::vector<T>& h) { return cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess; }
  bool poison() { return cudaMemset(p, 0xFF, n * sizeof(T)) == cudaSuccess; }  // all-ones float = NaN
  std::vector<T> download() const {
    std::vector<T> h(n);
    if (cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) h.assign(n, T(-12345));
    return h;
  }
};

// bf16 round to nearest even, as __float2bfloat16_rn does for finite values.
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

// Each element must satisfy |got - ref| <= abs * rms(ref) + rel * |ref| (abs is relative to the
// tensor's RMS, so one table serves values of any scale), and ||got - ref|| <= norm * ||ref||.
struct Tol {
  double abs, rel, norm;
};

testing::AssertionResult close(const char* what, const std::vector<float>& got, const std::vector<float>& ref,
                               const Tol& tol) {
  double ss_ref = 0, ss_err = 0;
  for (float r : ref) ss_ref += double(r) * r;
  const double rms = std::sqrt(ss_ref / double(std::max<size_t>(ref.size(), 1)));
  size_t bad = 0, first = 0;
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(double(got[i]) - ref[i]);
    ss_err += err * err;
    if (!(err <= tol.abs * rms + tol.rel * std::fabs(ref[i]))) {  // also catches NaN
      if (bad++ == 0) first = i;
      if (!(err <= worst)) worst = err;
    }
  }
  const double norm_err = std::sqrt(ss_err) / std::max(std::sqrt(ss_ref), 1e-30);
  if (bad == 0 && norm_err <= tol.norm) return testing::AssertionSuccess();
  auto r = testing::AssertionFailure() << what << ": " << bad << " of " << ref.size()
                                       << " elements out of tolerance (worst error " << worst << ", rms(ref) " << rms
                                       << "), relative norm error " << norm_err << " (limit " << tol.norm << ")";
  if (bad) r << "; first at " << first << ": got " << got[first] << ", expected " << ref[first];
  return r;
}

// Tolerances. fp32 operands: the kernels differ from the double reference only by fp32 rounding
// in sums of at most a few hundred terms and by exp2f/log2f (2 ulp), ~1e-6 relative; 2e-4 leaves
// a 100x margin and still catches any indexing or masking error, which is O(1).
// bf16 operands: the reference gets the same bf16-rounded q, k, v, dout, so what remains is the
// tensor-core path rounding P and dS to bf16 (unit roundoff 2^-8 = 3.9e-3, random over the terms
// of each sum: ~2.3e-3 relative RMS error, up to ~4.5x that in the worst of ~1e5 elements) plus
// D computed from the bf16-accurate out. lse comes from fp32 sums of exact bf16 products and is
// unaffected by P's rounding, hence its tighter bound.
const Tol kOutF32{2e-4, 2e-4, 2e-5}, kLseF32{2e-5, 2e-5, 2e-6}, kGradF32{2e-4, 2e-4, 2e-5};
const Tol kOutBf16{3e-2, 2e-2, 1e-2}, kLseBf16{1e-3, 1e-3, 1e-4}, kGradBf16{3e-2, 2e-2, 1e-2};

struct Case {
  const char* name;
  int NH, NKV, HS;
  std::vector<int32_t> lens;  // packed sequence lengths
  bool bf16;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name << (c.bf16 ? "_bf16" : "_fp32"); }

class AttentionCuda : public testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const std::string why = no_gpu_reason();
    if (!why.empty()) GTEST_SKIP() << "no usable CUDA device (" << why << "): CUDA attention tests skipped";
  }
};

TEST_P(AttentionCuda, MatchesCpuReference) {
  const Case& cs = GetParam();
  const int NH = cs.NH, NKV = cs.NKV, HS = cs.HS;
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS, OC = int64_t(NH) * HS;
  std::vector<int32_t> cu = {0};
  for (int32_t l : cs.lens) cu.push_back(cu.back() + l);
  const int S = int(cs.lens.size()), max_seqlen = *std::max_element(cs.lens.begin(), cs.lens.end());
  const int64_t N = cu.back();

  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::normal_distribution<float> randn;
  std::vector<float> qkv(size_t(N * QKV)), dout(size_t(N * OC));
  for (float& x : qkv) x = randn(rng);
  for (float& x : dout) x = randn(rng);

  // Reference on the operands the kernels actually multiply (bf16-rounded when asked).
  std::vector<float> qkv_r = qkv, dout_r = dout;
  if (cs.bf16) {
    for (float& x : qkv_r) x = round_bf16(x);
    for (float& x : dout_r) x = round_bf16(x);
  }
  const SeqLayout seqs{cu.data(), S, max_seqlen};
  std::vector<float> out_ref(size_t(N * OC)), lse_ref(size_t(N * NH)), dqkv_ref(size_t(N * QKV));
  cpu::ref::attention_forward(out_ref.data(), lse_ref.data(), qkv_r.data(), seqs, NH, NKV, HS);
  cpu::ref::attention_backward(dqkv_ref.data(), dout_r.data(), qkv_r.data(), out_ref.data(), lse_ref.data(), seqs,
                               NH, NKV, HS);

  DeviceBuffer<float> d_qkv(qkv.size()), d_dout(dout.size()), d_out(out_ref.size()), d_lse(lse_ref.size()),
      d_dqkv(dqkv_ref.size());
  DeviceBuffer<int32_t> d_cu(cu.size());
  DeviceBuffer<float> d_ws(cuda::flash_attention_backward_workspace_bytes(N, NH, NKV, HS) / sizeof(float));
  ASSERT_TRUE(d_qkv.p && d_dout.p && d_out.p && d_lse.p && d_dqkv.p && d_cu.p && d_ws.p) << "cudaMalloc failed";
  ASSERT_TRUE(d_qkv.upload(qkv) && d_dout.upload(dout) && d_cu.upload(cu));

  ASSERT_TRUE(d_out.poison() && d_lse.poison());
  cuda::flash_attention_forward(d_out.p, d_lse.p, d_qkv.p, d_cu.p, S, max_seqlen, N, NH, NKV, HS, cs.bf16, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << cudaGetErrorString(cudaGetLastError());
  const std::vector<float> out = d_out.download(), lse = d_lse.download();
  EXPECT_TRUE(close("out", out, out_ref, cs.bf16 ? kOutBf16 : kOutF32));
  EXPECT_TRUE(close("lse", lse, lse_ref, cs.bf16 ? kLseBf16 : kLseF32));

  // The backward gets the GPU's own out and lse, as in training.
  ASSERT_TRUE(d_dqkv.poison() && d_ws.poison());
  cuda::flash_attention_backward(d_dqkv.p, d_dout.p, d_qkv.p, d_out.p, d_lse.p, d_cu.p, S, max_seqlen, N, NH, NKV,
                                 HS, cs.bf16, d_ws.p, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << cudaGetErrorString(cudaGetLastError());
  const std::vector<float> dqkv = d_dqkv.download();
  // Compare q, k and v parts separately so a failure says which one.
  for (auto [part, lo, hi] : {std::tuple{"dq", 0, NH}, {"dk", NH, NH + NKV}, {"dv", NH + NKV, NH + 2 * NKV}}) {
    std::vector<float> got, ref;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t e = int64_t(lo) * HS; e < int64_t(hi) * HS; ++e) {
        got.push_back(dqkv[size_t(n * QKV + e)]);
        ref.push_back(dqkv_ref[size_t(n * QKV + e)]);
      }
    EXPECT_TRUE(close(part, got, ref, cs.bf16 ? kGradBf16 : kGradF32));
  }
}

std::vector<Case> cases() {
  const std::vector<Case> shapes = {
      // name          NH NKV  HS  packed lengths (several tiles, partial tiles, length 1, empty)
      {"mha_hs64",      4,  4,  64, {1, 70, 129, 64, 5}, false},
      {"gqa_hs128",     8,  2, 128, {200, 1, 63, 65}, false},
      {"gqa_hs128_long", 4, 2, 128, {520}, false},
      {"gqa_hs40",      4,  2,  40, {1, 33, 100, 31}, false},
      {"mqa_hs96",      6,  1,  96, {97, 1, 0, 40}, false},
      {"gqa_hs256",     2,  1, 256, {45, 1, 70}, false},
      {"mha_hs8",       2,  2,   8, {1, 2, 3, 50}, false},
  };
  std::vector<Case> all;
  for (bool bf16 : {false, true})
    for (Case c : shapes) {
      c.bf16 = bf16;
      all.push_back(c);
    }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Cuda, AttentionCuda, testing::ValuesIn(cases()), [](const auto& info) {
  return std::string(info.param.name) + (info.param.bf16 ? "_bf16" : "_fp32");
});

// Argument errors are reported before the device is touched, so this runs on any machine.
TEST(AttentionCudaArgs, BadHeadSizeNamesTheOp) {
  try {
    cuda::flash_attention_forward(nullptr, nullptr, nullptr, nullptr, 1, 4, 4, 2, 2, 12, true, nullptr);
    FAIL() << "HS = 12 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("flash_attention_forward"), std::string::npos) << e.what();
  }
  try {
    cuda::flash_attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 4, 4, 3, 2, 64, true,
                                   nullptr, nullptr);
    FAIL() << "NH = 3, NKV = 2 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("flash_attention_backward"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sft
