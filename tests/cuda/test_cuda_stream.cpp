// The CUDA backend's stream and events as a communicator (dist/) uses them: native_stream() is the
// stream every op runs on; record_event() marks the ops issued so far, which another stream can
// wait for; wait_event() makes the backend's later ops wait for an event of another stream. A
// smoke test of that ordering on large buffers (an unordered read would see old values). Skipped,
// saying why, where no usable GPU exists.
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "cuda_test_util.h"

namespace sft {
namespace {

using cuda_test::CudaTest;

class CudaStream : public CudaTest {
 protected:
  void TearDown() override {
    if (side_) cudaStreamDestroy(side_);
    if (side_done_) cudaEventDestroy(side_done_);
    CudaTest::TearDown();
  }
  cudaStream_t side_ = nullptr;   // the "communicator's" stream
  cudaEvent_t side_done_ = nullptr;
};

TEST_F(CudaStream, NativeStreamRunsTheOps) {
  auto* stream = static_cast<cudaStream_t>(gpu_->native_stream());
  ASSERT_NE(stream, nullptr);
  const int64_t n = 1 << 22;
  const std::vector<float> v = randn(size_t(n));
  Tensor a = gpu_alloc({n});
  gpu_->copy(a.data, v.data(), v.size() * 4);
  gpu_->scale(a, 4.0f);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);  // waits for the scale, if it ran there
  std::vector<float> got(v.size());
  ASSERT_EQ(cudaMemcpy(got.data(), a.data, got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(got[i], v[i] * 4.0f) << "element " << i;
}

// Backend ops -> record_event -> side stream waits, copies a into b, records -> wait_event ->
// backend ops on b. Scaling by powers of two is exact, so the result is known bit for bit.
TEST_F(CudaStream, RecordAndWaitOrderWork) {
  ASSERT_EQ(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&side_done_, cudaEventDisableTiming), cudaSuccess);
  const int64_t n = 1 << 24;  // 64 MiB per buffer
  Tensor a = gpu_alloc({n}), b = gpu_alloc({n});
  for (int round = 0; round < 3; ++round) {
    const std::vector<float> v = randn(size_t(n));
    gpu_->copy(a.data, v.data(), v.size() * 4);
    for (int i = 0; i < 4; ++i) gpu_->scale(a, 2.0f);  // a = 16 v, queued on the backend's stream
    void* computed = gpu_->record_event();
    ASSERT_NE(computed, nullptr);
    ASSERT_EQ(cudaStreamWaitEvent(side_, static_cast<cudaEvent_t>(computed), 0), cudaSuccess);
    gpu_->destroy_event(computed);  // allowed once the wait is queued
    ASSERT_EQ(cudaMemcpyAsync(b.data, a.data, a.nbytes(), cudaMemcpyDeviceToDevice, side_), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(side_done_, side_), cudaSuccess);
    gpu_->wait_event(side_done_);
    gpu_->scale(b, 0.25f);  // b = 4 v, only after the side stream's copy
    gpu_->scale(a, 0.0f);   // and a may be overwritten once the copy has read it
    const std::vector<float> got = download(b);
    size_t wrong = 0;
    for (size_t i = 0; i < got.size(); ++i) wrong += got[i] != v[i] * 4.0f;
    EXPECT_EQ(wrong, 0u) << "round " << round << ": elements not equal to 4 v";
  }
  gpu_->destroy_event(nullptr);  // a no-op
  try {
    gpu_->wait_event(nullptr);
    ADD_FAILURE() << "wait_event(nullptr) was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("wait_event"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sft
