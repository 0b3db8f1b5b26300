// The CUDA backend's GEMMs (cuBLASLt) and memory against the CPU backend (oneDNN): linear forward
// (with and without bias, = and +=) and backward (dx = / +=, dw +=, dbias +=) in fp32, TF32 and
// bf16, odd shapes, bf16 weight operands (bit-equal to the fp32 weight they round from), the bf16
// weight cache (a copy must never be used stale: writes through copy / fill_zero / scale mark it
// so, adamw_step rewrites it in the same kernel, also across gradient-accumulation micro-batches,
// and invalidate_weight_copies covers writes the backend does not see, as into a gather buffer),
// alloc / copy / fill_zero, the peak-memory counter and the out-of-memory message. Skipped, saying
// why, where no usable GPU exists.
#include <cuda_runtime_api.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

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

// After the weight changes (new values copied to the same address, then begin_pass() as the
// trainer does), the GEMM must use the new values: the copy() made the bf16 copy stale.
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

// A bf16 weight operand (a gathered bf16 unit under sharding) is used as it is: forward (= and +=,
// with bias), dx (= and +=), dw and dbias bit-equal to passing the fp32 weight that rounds to it;
// dw stays fp32. In fp32 (and TF32) matmuls it is bit-equal to the fp32 weight of the same
// (widened) values. The bf16 weight sits 256 bytes into a larger buffer, as in a gather buffer
// (the same alignment as the backend's own copies, so cuBLASLt picks the same algorithm).
TEST_F(CudaLinear, Bf16WeightOperand) {
  for (auto [dt, tf32] : {std::pair{DType::bf16, false}, {DType::f32, false}, {DType::f32, true}})
  for (auto [N, IC, OC] : {std::array<int64_t, 3>{64, 128, 96}, {37, 288, 864}, {129, 128, 32}}) {
    gpu_->set_matmul_dtype(dt);
    gpu_->set_tf32(tf32);
    gpu_->begin_pass();
    const std::string what = fmt::format("N={} IC={} OC={} {}{} seed {}", N, IC, OC, dtype_name(dt),
                                         tf32 ? " tf32" : "", seed_);
    std::vector<float> w32 = randn(size_t(OC * IC), 0.05f);
    std::vector<uint16_t> w16(w32.size());
    convert_f32_to_bf16(w32.data(), w16.data(), w16.size());
    if (dt == DType::f32) convert_bf16_to_f32(w16.data(), w32.data(), w32.size());  // the widened values
    const int64_t lead = 128;  // bf16 elements before the weight: 256 bytes
    void* buf = gpu_->alloc(size_t(lead + OC * IC) * 2);
    owned_.push_back(buf);
    uint16_t* w16_dev = static_cast<uint16_t*>(buf) + lead;
    gpu_->copy(w16_dev, w16.data(), w16.size() * 2);
    const Tensor w_bf16(w16_dev, DType::bf16, {OC, IC}, Device::cuda);
    const Tensor w_f32 = mirror(w32, {OC, IC}).gpu;
    const Tensor x = mirror(randn(size_t(N * IC)), {N, IC}).gpu, bias = mirror(randn(size_t(OC)), {OC}).gpu;

    // Two outputs starting from the same values, one per weight operand.
    auto pair = [&](int64_t rows, int64_t cols) {
      const std::vector<float> v = randn(size_t(rows * cols));
      return std::array<Tensor, 2>{mirror(v, {rows, cols}).gpu, mirror(v, {rows, cols}).gpu};
    };
    for (bool acc : {false, true}) {
      auto out = pair(N, OC);
      gpu_->linear_forward(out[0], x, w_f32, bias, acc);
      gpu_->linear_forward(out[1], x, w_bf16, bias, acc);
      EXPECT_EQ(download(out[0]), download(out[1])) << "forward, accumulate " << acc << ", " << what;
    }
    const Tensor dout = mirror(randn(size_t(N * OC)), {N, OC}).gpu;
    auto dw = pair(OC, IC), db = pair(1, OC);
    for (bool acc : {false, true}) {
      auto dx = pair(N, IC);
      gpu_->linear_backward(dx[0], dw[0], db[0], dout, x, w_f32, acc);
      gpu_->linear_backward(dx[1], dw[1], db[1], dout, x, w_bf16, acc);
      EXPECT_EQ(download(dx[0]), download(dx[1])) << "dx, accumulate " << acc << ", " << what;
      EXPECT_EQ(download(dw[0]), download(dw[1])) << "dw, " << what;
      EXPECT_EQ(download(db[0]), download(db[1])) << "dbias, " << what;
    }
  }
  gpu_->set_tf32(false);
}

// Views into a flat buffer, as the model lays out its parameters.
Tensor gpu_view(const Tensor& flat, int64_t offset, std::initializer_list<int64_t> dims) {
  return Tensor(static_cast<float*>(flat.data) + offset, DType::f32, dims, Device::cuda);
}
Tensor cpu_view(Mirror& flat, int64_t offset, std::initializer_list<int64_t> dims) {
  return Tensor(flat.host.data() + offset, DType::f32, dims);
}

// Every way the backend writes fp32 data marks an overlapping bf16 copy stale, with no
// begin_pass() in between: host -> device copy (loading, resume), device -> device copy, a
// partial fill_zero and scale.
TEST_F(CudaLinear, WritesMarkWeightCopiesStale) {
  const int64_t N = 16, IC = 64, OC = 32;
  gpu_->set_matmul_dtype(DType::bf16);
  cpu_->set_matmul_dtype(DType::bf16);
  Mirror x = mirror(randn(N * IC), {N, IC}), w = mirror(randn(OC * IC), {OC, IC});
  Tensor other = gpu_alloc({OC, IC});
  gpu_->begin_pass();
  for (const char* how : {"first use", "copy h2d", "copy d2d", "fill_zero", "scale"}) {
    const std::string h = how;
    if (h == "copy h2d") {
      w.host = randn(OC * IC);
      gpu_->copy(w.gpu.data, w.host.data(), w.host.size() * 4);
    } else if (h == "copy d2d") {
      w.host = randn(OC * IC);
      gpu_->copy(other.data, w.host.data(), w.host.size() * 4);
      gpu_->copy(w.gpu.data, other.data, w.host.size() * 4);
    } else if (h == "fill_zero") {  // rows 3..5 only
      std::fill(w.host.begin() + 3 * IC, w.host.begin() + 6 * IC, 0.0f);
      gpu_->fill_zero(gpu_view(w.gpu, 3 * IC, {3 * IC}));
    } else if (h == "scale") {
      for (float& v : w.host) v *= -1.5f;
      gpu_->scale(w.gpu, -1.5f);
    }
    w.cpu.data = w.host.data();
    cpu_->begin_pass();  // the CPU backend drops its copies per pass: the fresh rounding
    Mirror out = output({N, OC});
    cpu_->linear_forward(out.cpu, x.cpu, w.cpu, Tensor(), false);
    gpu_->linear_forward(out.gpu, x.gpu, w.gpu, Tensor(), false);
    EXPECT_LE(err(out), 1e-3) << how;
  }
}

class CudaWeightCopies : public CudaLinear {
 protected:
  // out (N, OC) = x · wᵀ in bf16 with the weight's current cached copy, and again after forcing a
  // fresh rounding (the fp32 weights copied out and back in, which marks the copies stale): the
  // two must be bit-identical.
  void expect_fresh(const Tensor& flat, const Tensor& x, const Tensor& w, const std::string& what) {
    const int64_t N = x.dim(0), OC = w.dim(0);
    Tensor out = gpu_alloc({N, OC}), fresh = gpu_alloc({N, OC}), tmp = gpu_alloc({flat.numel()});
    gpu_->linear_forward(out, x, w, Tensor(), false);
    gpu_->copy(tmp.data, flat.data, flat.nbytes());
    gpu_->copy(flat.data, tmp.data, flat.nbytes());
    gpu_->linear_forward(fresh, x, w, Tensor(), false);
    EXPECT_EQ(download(out), download(fresh)) << what << " (seed " << seed_ << ")";
  }
};

// adamw_step over a range holding two weights with bf16 copies and gaps (as the optimizer's merged
// segments): the copies it writes equal a fresh rounding of the new weights; a step over part of
// a weight leaves its copy stale, so it too is re-rounded.
TEST_F(CudaWeightCopies, AdamWWritesTheCopies) {
  const int64_t N = 24, IC = 96, OC = 40, W = OC * IC;
  const int64_t off1 = 0, off2 = W + IC, total = 2 * W + IC + 5;  // w1 | norm (IC) | w2 | tail (5)
  gpu_->set_matmul_dtype(DType::bf16);
  Tensor p = mirror(randn(total, 0.05f), {total}).gpu, g = mirror(randn(total, 1e-2f), {total}).gpu;
  Tensor m = gpu_alloc({total}), v = gpu_alloc({total});
  Tensor x = mirror(randn(N * IC), {N, IC}).gpu;
  const Tensor w1 = gpu_view(p, off1, {OC, IC}), w2 = gpu_view(p, off2, {OC, IC});
  gpu_->begin_pass();
  expect_fresh(p, x, w1, "before any step, w1");
  expect_fresh(p, x, w2, "before any step, w2");
  for (int64_t step = 1; step <= 3; ++step) {
    gpu_->adamw_step(p, g, m, v, {1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, step});
    gpu_->begin_pass();
    expect_fresh(p, x, w1, "after step " + std::to_string(step) + ", w1");
    expect_fresh(p, x, w2, "after step " + std::to_string(step) + ", w2");
  }
  // Half of w2 only (the rest of its range untouched).
  const Tensor half = gpu_view(p, off2, {W / 2});
  gpu_->adamw_step(half, gpu_view(g, off2, {W / 2}), gpu_view(m, off2, {W / 2}), gpu_view(v, off2, {W / 2}),
                   {1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, 4});
  expect_fresh(p, x, w2, "after a step over half of w2");
  expect_fresh(p, x, w1, "w1 untouched by it");
}

// Gradient accumulation: several forward/backward passes (each with begin_pass()) between
// optimizer steps, then the step; the GPU's cached copies (written by adamw_step, kept across
// passes) against the CPU backend, which re-rounds every pass, with both sides continuing from
// the same fp32 weights each step; and at the end against a fresh rounding, bit for bit.
TEST_F(CudaWeightCopies, GradientAccumulation) {
  const int64_t N = 32, IC = 128, OC = 64, W = OC * IC, total = W + OC;  // w | bias
  gpu_->set_matmul_dtype(DType::bf16);
  cpu_->set_matmul_dtype(DType::bf16);
  Mirror p = mirror(randn(total, 0.05f), {total}), g = mirror(std::vector<float>(size_t(total)), {total});
  Mirror m = mirror(std::vector<float>(size_t(total)), {total}), v = mirror(std::vector<float>(size_t(total)), {total});
  for (int64_t step = 1; step <= 3; ++step) {
    cpu_->fill_zero(g.cpu);
    gpu_->fill_zero(g.gpu);
    for (int micro = 0; micro < 3; ++micro) {
      cpu_->begin_pass();
      gpu_->begin_pass();
      const std::string what = "step " + std::to_string(step) + " micro-batch " + std::to_string(micro);
      Mirror x = mirror(randn(N * IC), {N, IC}), out = output({N, OC}), dout = mirror(randn(N * OC), {N, OC});
      cpu_->linear_forward(out.cpu, x.cpu, cpu_view(p, 0, {OC, IC}), cpu_view(p, W, {OC}), false);
      gpu_->linear_forward(out.gpu, x.gpu, gpu_view(p.gpu, 0, {OC, IC}), gpu_view(p.gpu, W, {OC}), false);
      EXPECT_LE(err(out), 1e-3) << what;
      Mirror dx = output({N, IC});
      cpu_->linear_backward(dx.cpu, cpu_view(g, 0, {OC, IC}), cpu_view(g, W, {OC}), dout.cpu, x.cpu,
                            cpu_view(p, 0, {OC, IC}), false);
      gpu_->linear_backward(dx.gpu, gpu_view(g.gpu, 0, {OC, IC}), gpu_view(g.gpu, W, {OC}), dout.gpu, x.gpu,
                            gpu_view(p.gpu, 0, {OC, IC}), false);
      EXPECT_LE(err(dx), 1e-3) << what;
    }
    const AdamWParams hp{1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, step};
    cpu_->adamw_step(p.cpu, g.cpu, m.cpu, v.cpu, hp);
    gpu_->adamw_step(p.gpu, g.gpu, m.gpu, v.gpu, hp);
    // The gradients differ by GEMM rounding; continue both sides from the GPU's weights and
    // moments. A host write on the CPU side only: the GPU's copies stay as adamw_step left them.
    p.host = download(p.gpu);
    m.host = download(m.gpu);
    v.host = download(v.gpu);
    p.cpu.data = p.host.data();
    m.cpu.data = m.host.data();
    v.cpu.data = v.host.data();
  }
  // The micro-batches of steps 2 and 3 ran on the copies adamw_step wrote (the CPU comparison
  // would catch a stale one); the last step's copy against a fresh rounding, bit for bit.
  Tensor x = mirror(randn(N * IC), {N, IC}).gpu;
  gpu_->begin_pass();
  expect_fresh(p.gpu, x, gpu_view(p.gpu, 0, {OC, IC}), "after the last step");
}

// A gather buffer holding layer after layer, as a sharded parameter store acquires units: each
// layer's fp32 weights are written into it behind the backend's back (cudaMemcpyAsync on the
// backend's own stream, as a collective would), then invalidate_weight_copies() over the unit; the
// next bf16 linear must use the new values, bit for bit as the same weights in a buffer of their
// own. A range that only touches a weight's last element also makes its copy re-rounded.
TEST_F(CudaWeightCopies, InvalidateAfterDirectWrite) {
  const int64_t N = 24, IC = 96, OC = 40, W = OC * IC;
  const int64_t off1 = 0, off2 = W + 7, total = 2 * W + 7 + 5;  // w1 | gap | w2 | tail
  gpu_->set_matmul_dtype(DType::bf16);
  auto* stream = static_cast<cudaStream_t>(gpu_->native_stream());
  ASSERT_NE(stream, nullptr);
  const Tensor gather = gpu_alloc({total}), x = mirror(randn(size_t(N * IC)), {N, IC}).gpu;
  const Tensor w1 = gpu_view(gather, off1, {OC, IC}), w2 = gpu_view(gather, off2, {OC, IC});
  auto expect_uses = [&](const Tensor& w, const std::vector<float>& all, int64_t off, const std::string& what) {
    const Tensor own = mirror(std::vector<float>(all.begin() + off, all.begin() + off + W), {OC, IC}).gpu;
    const Tensor out = gpu_alloc({N, OC}), want = gpu_alloc({N, OC});
    gpu_->linear_forward(out, x, w, Tensor(), false);
    gpu_->linear_forward(want, x, own, Tensor(), false);
    EXPECT_EQ(download(out), download(want)) << what << " (seed " << seed_ << ")";
  };
  gpu_->begin_pass();
  std::vector<float> host;
  for (int layer = 0; layer < 3; ++layer) {
    host = randn(size_t(total), 0.05f);
    ASSERT_EQ(cudaMemcpyAsync(gather.data, host.data(), gather.nbytes(), cudaMemcpyHostToDevice, stream),
              cudaSuccess);
    gpu_->invalidate_weight_copies(gather.data, gather.nbytes());
    gpu_->begin_pass();
    expect_uses(w1, host, off1, "layer " + std::to_string(layer) + ", w1");
    expect_uses(w2, host, off2, "layer " + std::to_string(layer) + ", w2");
  }
  // The last element of w1 only.
  host[size_t(off1 + W - 1)] = 3.0f;
  float* last = static_cast<float*>(gather.data) + off1 + W - 1;
  ASSERT_EQ(cudaMemcpyAsync(last, &host[size_t(off1 + W - 1)], 4, cudaMemcpyHostToDevice, stream), cudaSuccess);
  gpu_->invalidate_weight_copies(last, 4);
  expect_uses(w1, host, off1, "after a write to w1's last element");
  expect_uses(w2, host, off2, "w2, untouched by it");
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
