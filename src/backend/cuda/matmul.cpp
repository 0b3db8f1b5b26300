// Linear layers on the GPU through cuBLASLt: out = x·wᵀ (+ b), dx = dout·w, dw += doutᵀ·x. The
// row-major (rows, cols) buffers are column-major (cols, rows) to cuBLAS, so out (N, OC) is
// C (OC, N) = op(w) · x with w transposed (TN), dx is NN and dw is NT; nothing is copied to
// transpose. bf16 mode rounds the operands into bf16 scratch and accumulates in fp32 with fp32
// outputs; fp32 mode uses TF32 tensor cores only when set_tf32(true). One plan (descriptors +
// heuristic algorithm) per shape and alignment.
//
// bf16 weight copies are cached by fp32 address across passes (begin_pass() keeps them). A copy
// can only go stale when the fp32 weight changes, and device memory changes only through this
// backend, so every writer keeps the cache right: adamw_step() writes the copies lying inside
// its range in the same kernel as the update (weight_copies_in); copy(), fill_zero() and scale()
// mark the copies they overlap stale (weights_written), so loading, resuming from a checkpoint
// and any host write go through a fresh rounding; dealloc() drops them (forget_weights). The
// other ops write activations and gradients only, never weights. Micro-batches of gradient
// accumulation and generation after training thus reuse the copies the last step wrote. Memory
// written behind the backend's back (a collective into a gather buffer that holds layer after
// layer) is announced by invalidate_weight_copies(), which marks the overlapping copies stale the
// same way (kept allocated, re-rounded in stream order on next use: freeing would sync the stream).
//
// A bf16 weight tensor (a gathered bf16 unit) is the bf16 GEMM's A operand as it is: no fp32 copy,
// no cache entry. It is bit-equal to passing the fp32 weight that rounds to it when its address
// has the same alignment as the cached copies (256 bytes, as cudaMalloc returns): the plan, and so
// cuBLASLt's algorithm, is chosen per operand alignment. fp32 matmuls widen it (exactly) into
// per-call scratch, as the CPU backend does: the same as passing the fp32 weight of those values.
// dw stays fp32.
#include <cublasLt.h>

#include <algorithm>
#include <map>
#include <tuple>
#include <unordered_map>

#include <fmt/format.h>

#include "backend/cuda/backend_cuda.h"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.h"

#define SFT_CUBLAS_CHECK(op, call)                                                                    \
  do {                                                                                                \
    const cublasStatus_t sft_st_ = (call);                                                            \
    if (sft_st_ != CUBLAS_STATUS_SUCCESS)                                                             \
      ::sft::cuda::fail_call(op, #call, __FILE__, __LINE__, cublasLtGetStatusString(sft_st_));        \
  } while (0)

namespace sft {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLASLt's recommendation for Hopper

// The largest power of two (up to 256) that divides the address: cuBLASLt must only pick
// algorithms that work at this alignment (its default assumes 256).
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  return uint32_t(std::min<uintptr_t>(a & (~a + 1), 256));
}

}  // namespace

struct CudaBackend::Gemm {
  // (transA, transB, m, n, k, lda, ldb, ldc, bf16, tf32, alignment of A, B, C)
  using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, uint32_t,
                         uint32_t, uint32_t>;
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  struct Buffer {
    uint16_t* data = nullptr;
    size_t capacity = 0;  // elements
    bool valid = false;   // weights: holds the rounding of the current fp32 values
  };

  CudaBackend& be;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<Key, Plan> plans;
  Buffer scratch[2];                                   // bf16 activation operands
  std::unordered_map<const float*, Buffer> weights;   // bf16 copies of weights, by fp32 address
  float* widened = nullptr;                            // a bf16 weight widened for an fp32 matmul
  size_t widened_capacity = 0;                         // elements

  explicit Gemm(CudaBackend& backend) : be(backend) {
    SFT_CUBLAS_CHECK("cublasLt", cublasLtCreate(&handle));
    workspace = be.alloc_scratch(kWorkspaceBytes, "cuBLASLt workspace");
  }
  ~Gemm() {  // no throwing here: status codes are ignored on teardown
    for (auto& [key, p] : plans) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.desc);
    }
    for (Buffer& b : scratch) be.free_device(b.data);
    for (auto& [ptr, b] : weights) be.free_device(b.data);
    be.free_device(widened);
    be.free_device(workspace);
    if (handle) cublasLtDestroy(handle);
  }

  void ensure(Buffer& b, size_t n, const char* what) {
    if (b.capacity >= n) return;
    be.free_device(b.data);
    b = Buffer{};
    b.data = static_cast<uint16_t*>(be.alloc_scratch(n * sizeof(uint16_t), what));
    b.capacity = n;
  }

  // The operand as the GEMM reads it: the fp32 data itself, or its bf16 rounding in scratch[slot].
  const void* operand(const Tensor& t, DType dt, int slot) {
    if (dt == DType::f32) return t.f32();
    ensure(scratch[slot], size_t(t.numel()), "bf16 GEMM operand");
    cuda::f32_to_bf16(scratch[slot].data, t.f32(), t.numel(), be.stream_);
    return scratch[slot].data;
  }

  // The weight operand as the GEMM reads it: a bf16 weight as it is (or widened for an fp32
  // matmul), the fp32 weight itself, or its cached bf16 rounding.
  const void* weight(const Tensor& w, DType dt, const char* op) {
    if (w.dtype == DType::bf16) {
      if (dt == DType::bf16) return w.bf16();
      const size_t n = size_t(w.numel());
      if (widened_capacity < n) {
        be.free_device(widened);
        widened = nullptr;
        widened_capacity = 0;
        widened = static_cast<float*>(be.alloc_scratch(n * sizeof(float), "fp32 copy of a bf16 weight"));
        widened_capacity = n;
      }
      cuda::bf16_to_f32(widened, w.bf16(), w.numel(), be.stream_);
      return widened;
    }
    SFT_CHECK(w.dtype == DType::f32, "cuda", "{}: weight dtype {} (expected F32 or BF16)", op, dtype_name(w.dtype));
    if (dt == DType::f32) return w.f32();
    Buffer& b = weights[w.f32()];
    if (!b.valid || b.capacity != size_t(w.numel())) {
      if (b.capacity != size_t(w.numel())) {
        be.free_device(b.data);
        b = Buffer{};
        ensure(b, size_t(w.numel()), "bf16 weight copy");
      }
      cuda::f32_to_bf16(b.data, w.f32(), w.numel(), be.stream_);
      b.valid = true;
    }
    return b.data;
  }

  Plan& plan(const Key& key, const char* op) {
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    const auto [ta, tb, m, n, k, lda, ldb, ldc, bf16, tf32, align_a, align_b, align_c] = key;
    Plan p;
    const cublasComputeType_t compute = !bf16 && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    SFT_CUBLAS_CHECK(op, cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F));
    const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    SFT_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    SFT_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    const cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    // Stored shapes (column-major rows, cols) before op(): A is k x m when transposed, B is n x k.
    SFT_CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&p.a, ab, uint64_t(ta ? k : m), uint64_t(ta ? m : k), lda));
    SFT_CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&p.b, ab, uint64_t(tb ? n : k), uint64_t(tb ? k : n), ldb));
    SFT_CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, uint64_t(m), uint64_t(n), ldc));
    cublasLtMatmulPreference_t pref = nullptr;
    SFT_CUBLAS_CHECK(op, cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspaceBytes;
    SFT_CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                              sizeof(ws)));
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}};
    for (const auto& [attr, value] : aligns)
      SFT_CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
      fail("cuda", "{}: cuBLASLt has no algorithm for {}{} m={} n={} k={} ({}{}, alignments {}/{}/{}): {}", op,
           ta ? "T" : "N", tb ? "T" : "N", m, n, k, bf16 ? "bf16" : "fp32", !bf16 && tf32 ? " tf32" : "", align_a,
           align_b, align_c, st != CUBLAS_STATUS_SUCCESS ? cublasLtGetStatusString(st) : "none found");
    p.algo = result.algo;
    return plans.emplace(key, p).first->second;
  }

  // C (m, n) = / += op(A) (m, k) · op(B) (k, n), column-major, fp32 C; beta 0 or 1.
  void run(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* A, int64_t lda, const void* B,
           int64_t ldb, float* C, int64_t ldc, bool accumulate, DType dt, bool tf32, const char* op) {
    if (m == 0 || n == 0) return;
    if (k == 0) {  // an empty sum: C = 0 (or unchanged)
      if (!accumulate) SFT_CUDA_CHECK(op, cudaMemset2DAsync(C, size_t(ldc) * 4, 0, size_t(m) * 4, size_t(n), be.stream_));
      return;
    }
    const Key key{ta, tb, m, n, k, lda, ldb, ldc, dt == DType::bf16, tf32, alignment(A), alignment(B), alignment(C)};
    Plan& p = plan(key, op);
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    SFT_CUBLAS_CHECK(op, cublasLtMatmul(handle, p.desc, &alpha, A, p.a, B, p.b, &beta, C, p.c, C, p.c, &p.algo,
                                        workspace, kWorkspaceBytes, be.stream_));
  }
};

void CudaBackend::create_gemm() { gemm_.reset(new Gemm(*this)); }
void CudaBackend::GemmDeleter::operator()(Gemm* g) const { delete g; }

void CudaBackend::forget_weights(const void* begin, size_t bytes) {
  const auto* lo = static_cast<const char*>(begin);
  for (auto it = gemm_->weights.begin(); it != gemm_->weights.end();) {
    const auto* p = reinterpret_cast<const char*>(it->first);
    if (p >= lo && p < lo + bytes) {
      free_device(it->second.data);
      it = gemm_->weights.erase(it);
    } else {
      ++it;
    }
  }
}

void CudaBackend::weights_written(const void* begin, size_t bytes) {
  if (!gemm_ || bytes == 0) return;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(begin), hi = lo + bytes;
  for (auto& [ptr, b] : gemm_->weights) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
    if (p < hi && lo < p + b.capacity * sizeof(float)) b.valid = false;
  }
}

std::vector<CudaBackend::WeightCopy> CudaBackend::weight_copies_in(const float* p, int64_t n) {
  std::vector<WeightCopy> inside;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p), hi = lo + size_t(n) * sizeof(float);
  for (auto& [ptr, b] : gemm_->weights) {
    const uintptr_t q = reinterpret_cast<uintptr_t>(ptr), q_end = q + b.capacity * sizeof(float);
    if (b.capacity == 0 || q_end <= lo || q >= hi) continue;  // no overlap
    if (q >= lo && q_end <= hi)
      inside.push_back({int64_t((q - lo) / sizeof(float)), int64_t(b.capacity), b.data});
    else
      b.valid = false;  // partly inside: re-rounded on next use
  }
  std::sort(inside.begin(), inside.end(), [](const WeightCopy& a, const WeightCopy& b) { return a.offset < b.offset; });
  // Copies overlapping one another (views of one weight under two addresses) are left stale
  // rather than written twice.
  std::vector<WeightCopy> kept;
  for (const WeightCopy& c : inside) {
    Gemm::Buffer& b = gemm_->weights.at(p + c.offset);
    if (!kept.empty() && c.offset < kept.back().offset + kept.back().n) {
      b.valid = false;
      continue;
    }
    b.valid = true;  // the caller's kernel, queued before any later GEMM, writes it in full
    kept.push_back(c);
  }
  return kept;
}

// The bf16 copies outlive passes: see the top of this file for what keeps them right.
void CudaBackend::begin_pass() {}

void CudaBackend::linear_forward(Tensor out, Tensor x, Tensor w, Tensor bias, bool accumulate) {
  const int64_t N = x.numel() / x.dim(-1), IC = x.dim(-1), OC = w.dim(0);
  SFT_ASSERT(w.dim(1) == IC && out.numel() == N * OC && (bias.empty() || bias.numel() == OC));
  const void* a = gemm_->weight(w, matmul_dtype_, "linear_forward");
  const void* b = gemm_->operand(x, matmul_dtype_, 0);
  // outᵀ (OC, N) = wᵀ-stored (IC, OC) transposed · xᵀ (IC, N)
  gemm_->run(true, false, OC, N, IC, a, IC, b, IC, out.f32(), OC, accumulate, matmul_dtype_, tf32_, "linear_forward");
  if (!bias.empty()) cuda::add_bias(out.f32(), bias.f32(), N, OC, stream_);
}

void CudaBackend::linear_backward(Tensor dx, Tensor dw, Tensor dbias, Tensor dout, Tensor x, Tensor w,
                                  bool accumulate_dx) {
  const int64_t N = x.numel() / x.dim(-1), IC = x.dim(-1), OC = w.dim(0);
  SFT_ASSERT(w.dim(1) == IC && dout.numel() == N * OC && dw.numel() == OC * IC);
  SFT_CHECK(dw.dtype == DType::f32, "cuda", "linear_backward: dw must be F32 (the gradient of a {} weight), got {}",
            dtype_name(w.dtype), dtype_name(dw.dtype));
  const void* g = gemm_->operand(dout, matmul_dtype_, 0);  // doutᵀ (OC, N), used by both GEMMs
  if (!dx.empty()) {  // dxᵀ (IC, N) = w-stored (IC, OC) · doutᵀ (OC, N)
    const void* a = gemm_->weight(w, matmul_dtype_, "linear_backward");
    gemm_->run(false, false, IC, N, OC, a, IC, g, OC, dx.f32(), IC, accumulate_dx, matmul_dtype_, tf32_,
               "linear_backward (dx)");
  }
  // dwᵀ (IC, OC) += xᵀ (IC, N) · (doutᵀ (OC, N))ᵀ
  const void* xa = gemm_->operand(x, matmul_dtype_, 1);
  gemm_->run(false, true, IC, OC, N, xa, IC, g, OC, dw.f32(), IC, true, matmul_dtype_, tf32_, "linear_backward (dw)");
  if (!dbias.empty()) cuda::bias_backward(dbias.f32(), dout.f32(), N, OC, stream_);
}

}  // namespace sft
