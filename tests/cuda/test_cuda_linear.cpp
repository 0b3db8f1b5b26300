// The CUDA backend's GEMMs (cuBLASLt) and memory against the CPU backend (oneDNN): linear forward
// (with and without bias, = and +=) and backward (dx = / +=, dw +=, dbias +=) in fp32, TF32 and
// bf16, odd shapes, the per-pass bf16 weight cache (stale copies must not survive begin_pass()),
// alloc / copy / fill_zero, the peak-memory counter and the out-of-memory message. Skipped,
// saying why, where no usable GPU exists.
#include <array>
#include <cmath>

#include <fmt/format.h>

#include "cuda_test_util.h"

namespace sft {
namespace {

using cuda_test::CudaTest;
using cuda_test::Mirror;

// Normalised error allowed per GEMM precision.
double gemm_tol(DType dt, bool tf32) {
  if (dt == DType::bf16)
    // Both backends round x, w and dout to bf16 the same way (nearest even) and accumulate in
    // fp32, so only summation order and the tensor cores' fp32 adders differ: ~1e-5 expected. A
    // stale or unrounded operand gives 2^-9 = 2e-3 and more.
    return 1e-3;
  if (tf32) return 5e-3;  // operands rounded to 10-bit mantissas on the GPU only (2^-11 each)
  return 1e-5;            // fp32 FMA in another summation order over K <= 1000
}

class CudaLinear : public CudaTest {
 protected:
  // One forward + backward of a linear layer of the given shape on both backends.
  void check(int64_t N, int64_t IC, int64_t OC, bool bias, DType dt, bool tf32) {
    cpu_->set_matmul_dtype(dt);
    gpu_->set_matmul_dtype(dt);
    gpu_->set_tf32(tf32);
    cpu_->begin_pass();
    gpu_->begin_pass();
    const double t = gemm_tol(dt, tf32);
    const std::string what = fmt::format("N={} IC={} OC={} bias={} {}{} seed {}", N, IC, OC, bias, dtype_name(dt),
                                         tf32 ? " tf32" : "", seed_);
    Mirror x = mirror(randn(N * IC), {N, IC}), w = mirror(randn(OC * IC, 0.05f), {OC, IC});
    Mirror b = mirror(randn(OC), {OC});
    for (bool acc : {false, true}) {
      Mirror out = acc ? mirror(randn(N * OC), {N, OC}) : output({N, OC});
      cpu_->linear_forward(out.cpu, x.cpu, w.cpu, bias ? b.cpu : Tensor(), acc);
      gpu_->linear_forward(out.gpu, x.gpu, w.gpu, bias ? b.gpu : Tensor(), acc);
      EXPECT_LE(err(out), t) << "forward, accumulate " << acc << ", " << what;
    }
    Mirror dout = mirror(randn(N * OC), {N, OC}), dw = mirror(randn(OC * IC), {OC, IC}), db = mirror(randn(OC), {OC});
    for (bool acc : {false, true}) {
      Mirror dx = acc ? mirror(randn(N * IC), {N, IC}) : output({N, IC});
      cpu_->linear_backward(dx.cpu, dw.cpu, bias ? db.cpu : Tensor(), dout.cpu, x.cpu, w.cpu, acc);
      gpu_->linear_backward(dx.gpu, dw.gpu, bias ? db.gpu : Tensor(), dout.gpu, x.gpu, w.gpu, acc);
      EXPECT_LE(err(dx), t) << "dx, accumulate " << acc << ", " << what;
      EXPECT_LE(err(dw), t) << "dw (+= twice), " << what;
      if (bias) {
        EXPECT_LE(err(db), 1e-5) << "dbias (fp32 column sums), " << what;
      }
    }
    // dx may be skipped (the first layer's input needs no gradient).
    cpu_->linear_backward(Tensor(), dw.cpu, Tensor(), dout.cpu, x.cpu, w.cpu, false);
    gpu_->linear_backward(Tensor(), dw.gpu, Tensor(), dout.gpu, x.gpu, w.gpu, false);
    EXPECT_LE(err(dw), t) << "dw without dx, " << what;
  }
};

TEST_F(CudaLinear, Fp32) {
  for (auto [N, IC, OC] : {std::array<int64_t, 3>{64, 128, 96}, {37, 288, 864}, {129, 77, 33}, {1, 64, 1000}})
    check(N, IC, OC, N != 64, DType::f32, false);
}

TEST_F(CudaLinear, Tf32) { check(200, 512, 384, true, DType::f32, true); }

TEST_F(CudaLinear, Bf16) {
  for (auto [N, IC, OC] : {std::array<int64_t, 3>{64, 128, 96}, {37, 288, 864}, {129, 77, 33}, {512, 1024, 2048}})
    check(N, IC, OC, N == 37, DType::bf16, false);
}

// The bf16 copy of a weight is made once per pass: after the weight changes and begin_pass(),
// the GEMM must use the new values.
TEST_F(CudaLinear, WeightCacheIsDroppedEachPass) {
  const int64_t N = 16, IC = 64, OC = 32;
  gpu_->set_matmul_dtype(DType::bf16);
  cpu_->set_matmul_dtype(DType::bf16);
  Mirror x = mirror(randn(N * IC), {N, IC}), w = mirror(randn(OC * IC), {OC, IC});
  for (int pass = 0; pass < 3; ++pass) {
    if (pass > 0) {  // new weights at the same address
      w.host = randn(OC * IC);
      w.cpu.data = w.host.data();
      gpu_->copy(w.gpu.data, w.host.data(), w.host.size() * 4);
    }
    cpu_->begin_pass();
    gpu_->begin_pass();
    Mirror out = output({N, OC});
    cpu_->linear_forward(out.cpu, x.cpu, w.cpu, Tensor(), false);
    gpu_->linear_forward(out.gpu, x.gpu, w.gpu, Tensor(), false);
    EXPECT_LE(err(out), 1e-3) << "pass " << pass;
  }
}

TEST_F(CudaLinear, Memory) {
  const size_t peak0 = gpu_->peak_memory_bytes();
  const int64_t n = 3 << 20;
  Tensor a = gpu_alloc({n}), b = gpu_alloc({n});
  EXPECT_GE(gpu_->peak_memory_bytes(), peak0 + 2 * size_t(n) * 4);
  EXPECT_EQ(download(a), std::vector<float>(size_t(n), 0.0f)) << "alloc() is zero-filled";
  const std::vector<float> v = randn(size_t(n));
  gpu_->copy(a.data, v.data(), v.size() * 4);  // host -> device
  gpu_->copy(b.data, a.data, v.size() * 4);    // device -> device
  EXPECT_EQ(download(b), v);                   // device -> host
  gpu_->fill_zero(Tensor(static_cast<float*>(b.data) + 5, DType::f32, {10}, Device::cuda));
  const std::vector<float> z = download(b);
  EXPECT_EQ(z[4], v[4]);
  EXPECT_EQ(z[5], 0.0f);
  EXPECT_EQ(z[14], 0.0f);
  EXPECT_EQ(z[15], v[15]);
  EXPECT_NE(gpu_->device_description().find("compute capability"), std::string::npos);
}

TEST_F(CudaLinear, OutOfMemorySaysWhatToReduce) {
  try {
    gpu_->alloc(size_t(1) << 50);  // 1 PiB
    FAIL() << "a 1 PiB allocation succeeded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("out of GPU memory"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--per_device_train_batch_size"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--gradient_checkpointing"), std::string::npos) << msg;
  }
  // The backend stays usable after the failed allocation.
  Tensor t = gpu_alloc({1000});
  EXPECT_EQ(download(t), std::vector<float>(1000, 0.0f));
}

}  // namespace
}  // namespace sft
