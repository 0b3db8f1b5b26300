// CudaBackend: device selection and checks, error reporting, events on the backend's stream (for
// ordering with communication), memory (tracked for the peak) and the pinned staging of host int32
// inputs. The op table is in ops.cpp, the GEMMs in matmul.cpp.
#include "backend/cuda/backend_cuda.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "backend/cuda/check.h"
#include "backend/cuda/create.h"
#include "backend/cuda/kernels.h"

namespace sft {

namespace cuda {

bool sync_after_launch = [] {
  const char* v = std::getenv("SFT_CUDA_SYNC");
  return v && *v && std::strcmp(v, "0") != 0;
}();

void fail_call(const char* op, const char* call, const char* file, int line, const char* message) {
  fail("cuda", "{}: {} failed at {}:{}: {}{}", op, call, file, line, message,
       sync_after_launch ? ""
                         : " (kernel faults surface at a later call: rerun with SFT_CUDA_SYNC=1 to name the op "
                           "that caused it)");
}

void check_launch(const char* op, const char* file, int line) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail_call(op, "kernel launch", file, line, cudaGetErrorString(e));
  if (sync_after_launch && (e = cudaDeviceSynchronize()) != cudaSuccess)
    fail_call(op, "kernel (SFT_CUDA_SYNC)", file, line, cudaGetErrorString(e));
}

}  // namespace cuda

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

std::string probe_device(int dev, cudaDeviceProp* props) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it
    return fmt::format("no usable GPU: {} ({})", cudaGetErrorString(e),
                       e == cudaErrorInsufficientDriver
                           ? "the NVIDIA driver is missing or older than this build's CUDA runtime needs"
                           : cudaGetErrorName(e));
  }
  if (count == 0) return "no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)";
  SFT_CUDA_CHECK("device", cudaGetDeviceProperties(props, dev));
  if (props->major < 8)
    return fmt::format("GPU {} ({}) has compute capability {}.{}; this build's kernels and bf16 GEMMs need 8.0 or "
                       "newer (A100, H100, RTX 30xx and later)",
                       dev, props->name, props->major, props->minor);
  return "";
}

}  // namespace

std::string cuda_probe() {
  int dev = 0;
  cudaDeviceProp props{};
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    dev = 0;
  }
  return probe_device(dev, &props);
}

std::unique_ptr<Backend> create_cuda_backend(int local_rank) { return std::make_unique<CudaBackend>(local_rank); }

CudaBackend::CudaBackend(int local_rank) {
  if (cudaGetDevice(&device_) != cudaSuccess) {  // no driver: probe_device() says so below
    cudaGetLastError();
    device_ = 0;
  }
  int count = 0;
  if (local_rank >= 0 && cudaGetDeviceCount(&count) == cudaSuccess && count > 0) {
    SFT_CHECK(count == 1 || local_rank < count, "cuda",
              "local rank {} has no GPU of its own: {} GPUs are visible on this node (start at most one rank per "
              "GPU, or give each rank one GPU with CUDA_VISIBLE_DEVICES / --gpus-per-task)", local_rank, count);
    device_ = count == 1 ? 0 : local_rank;
  }
  cudaGetLastError();
  const std::string why = probe_device(device_, &props_);
  if (!why.empty()) fail("cuda", "--device cuda: {}; use --device cpu", why);
  SFT_CUDA_CHECK("device", cudaSetDevice(device_));
  SFT_CUDA_CHECK("device", cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  for (IntStaging& s : staging_) SFT_CUDA_CHECK("device", cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming));
  reduce_scratch_ = static_cast<double*>(alloc_scratch((cuda::kReduceBlocks + 1) * sizeof(double), "sum_squares"));
  create_gemm();
}

CudaBackend::~CudaBackend() {
  // Nothing here may throw: errors are reported and the teardown goes on.
  auto report = [](const char* what, cudaError_t e) {
    if (e != cudaSuccess) std::fprintf(stderr, "[cuda] %s during teardown: %s\n", what, cudaGetErrorString(e));
  };
  report("cudaStreamSynchronize", cudaStreamSynchronize(stream_));
  gemm_.reset();
  for (IntStaging& s : staging_) {
    if (s.pinned) report("cudaFreeHost", cudaFreeHost(s.pinned));
    if (s.copied) report("cudaEventDestroy", cudaEventDestroy(s.copied));
  }
  for (auto& [ptr, bytes] : allocations_) report("cudaFree", cudaFree(ptr));
  if (stream_) report("cudaStreamDestroy", cudaStreamDestroy(stream_));
}

std::string CudaBackend::device_description() const {
  return fmt::format("{} (compute capability {}.{}, {:.0f} GiB, {} SMs)", props_.name, props_.major, props_.minor,
                     double(props_.totalGlobalMem) / (kMiB * 1024.0), props_.multiProcessorCount);
}

void CudaBackend::synchronize() { SFT_CUDA_CHECK("synchronize", cudaStreamSynchronize(stream_)); }

// ---- ordering with other streams ----

void* CudaBackend::record_event() {
  cudaEvent_t e = nullptr;
  SFT_CUDA_CHECK("record_event", cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  const cudaError_t st = cudaEventRecord(e, stream_);
  if (st != cudaSuccess) {  // the event is freed before the error is thrown
    cudaEventDestroy(e);
    cuda::fail_call("record_event", "cudaEventRecord(event, stream_)", __FILE__, __LINE__, cudaGetErrorString(st));
  }
  return e;
}

void CudaBackend::wait_event(void* event) {
  SFT_CHECK(event != nullptr, "cuda", "wait_event: a null event (record_event() returns the handle to wait on)");
  SFT_CUDA_CHECK("wait_event", cudaStreamWaitEvent(stream_, static_cast<cudaEvent_t>(event), 0));
}

void CudaBackend::destroy_event(void* event) {
  if (event) SFT_CUDA_CHECK("destroy_event", cudaEventDestroy(static_cast<cudaEvent_t>(event)));
}

// ---- memory ----

void* CudaBackend::alloc_scratch(size_t bytes, const char* what) {
  const size_t n = std::max<size_t>((bytes + 255) / 256 * 256, 256);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, n);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    const bool info = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
    cudaGetLastError();
    fail("cuda",
         "out of GPU memory: {} needs {:.1f} MiB, {} on {}; this process holds {:.1f} MiB (peak {:.1f} MiB). Reduce "
         "--per_device_train_batch_size or --model_max_length, or enable --gradient_checkpointing",
         what, double(n) / kMiB,
         info ? fmt::format("{:.1f} MiB of {:.1f} MiB are free", double(free_b) / kMiB, double(total_b) / kMiB)
              : std::string("free memory unknown"),
         props_.name, double(bytes_in_use_) / kMiB, double(peak_bytes_) / kMiB);
  }
  SFT_CUDA_CHECK(what, e);
  allocations_[p] = n;
  bytes_in_use_ += n;
  peak_bytes_ = std::max(peak_bytes_, bytes_in_use_);
  return p;
}

void CudaBackend::free_device(void* ptr) {
  if (!ptr) return;
  // Reported, not thrown: destructors call this.
  auto it = allocations_.find(ptr);
  if (it == allocations_.end()) {
    std::fprintf(stderr, "[cuda] dealloc of %p, which this backend did not allocate: ignored\n", ptr);
    return;
  }
  // Queued kernels may still use the buffer.
  cudaError_t e = cudaStreamSynchronize(stream_);
  if (e == cudaSuccess) e = cudaFree(ptr);
  if (e != cudaSuccess) std::fprintf(stderr, "[cuda] dealloc: %s\n", cudaGetErrorString(e));
  bytes_in_use_ -= it->second;
  allocations_.erase(it);
}

void* CudaBackend::alloc(size_t bytes) {
  void* p = alloc_scratch(bytes, "alloc");
  SFT_CUDA_CHECK("alloc", cudaMemsetAsync(p, 0, bytes, stream_));
  return p;
}

void CudaBackend::dealloc(void* ptr) {
  if (!ptr) return;
  auto it = allocations_.find(ptr);
  if (it != allocations_.end() && gemm_) forget_weights(ptr, it->second);
  free_device(ptr);
}

static bool is_device_memory(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  weights_written(dst, bytes);  // a bf16 copy of a weight in dst goes stale (no-op for host dst)
  SFT_CUDA_CHECK("copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
  // A copy that involves host memory completes before returning (the caller reads or reuses it).
  if (!is_device_memory(dst) || !is_device_memory(src)) SFT_CUDA_CHECK("copy", cudaStreamSynchronize(stream_));
}

void* CudaBackend::alloc_host(size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 64, cudaHostAllocDefault);
  if (e != cudaSuccess) {
    cudaGetLastError();
    fail("cuda", "alloc_host: cudaHostAlloc of {} MB of pinned host memory failed: {}", bytes >> 20,
         cudaGetErrorString(e));
  }
  std::memset(p, 0, bytes);
  return p;
}

void CudaBackend::free_host(void* ptr) {
  if (!ptr) return;
  cudaError_t e = cudaStreamSynchronize(stream_);  // no copy still reads or writes it
  if (e == cudaSuccess) e = cudaFreeHost(ptr);
  if (e != cudaSuccess) std::fprintf(stderr, "[cuda] free_host: %s\n", cudaGetErrorString(e));
}

void CudaBackend::copy_async(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  weights_written(dst, bytes);
  SFT_CUDA_CHECK("copy_async", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
}

void CudaBackend::fill_zero(Tensor t) {
  weights_written(t.data, t.nbytes());
  SFT_CUDA_CHECK("fill_zero", cudaMemsetAsync(t.data, 0, t.nbytes(), stream_));
}

// ---- host int32 inputs ----

const int32_t* CudaBackend::stage(Slot slot, const int32_t* host, int64_t n) {
  IntStaging& s = staging_[slot];
  const size_t bytes = size_t(n) * sizeof(int32_t);
  if (n == 0 || (s.sent.size() == size_t(n) && std::memcmp(s.sent.data(), host, bytes) == 0)) return s.device;
  if (size_t(n) > s.capacity) {
    const size_t cap = std::max<size_t>(size_t(n), 2 * s.capacity);
    free_device(s.device);  // waits for the kernels that read it
    if (s.pinned) SFT_CUDA_CHECK("staging", cudaFreeHost(s.pinned));
    s.pinned = nullptr;
    s.device = nullptr;
    s.capacity = 0;
    SFT_CUDA_CHECK("staging", cudaMallocHost(reinterpret_cast<void**>(&s.pinned), cap * sizeof(int32_t)));
    s.device = static_cast<int32_t*>(alloc_scratch(cap * sizeof(int32_t), "staging"));
    s.capacity = cap;
  }
  SFT_CUDA_CHECK("staging", cudaEventSynchronize(s.copied));  // the last copy out of pinned is done
  std::memcpy(s.pinned, host, bytes);
  SFT_CUDA_CHECK("staging", cudaMemcpyAsync(s.device, s.pinned, bytes, cudaMemcpyHostToDevice, stream_));
  SFT_CUDA_CHECK("staging", cudaEventRecord(s.copied, stream_));
  s.sent.assign(host, host + n);
  return s.device;
}

}  // namespace sft
