// Linear layers on the CPU through oneDNN 2.6 matmul: out = x·wᵀ + b and its backward
// (dx = dout·w, dw += doutᵀ·x). Weights are stored (OC, IC) row-major as torch nn.Linear; the
// transposes are expressed as memory-format tags, never copied. In bf16 mode operands are rounded
// to bf16 into scratch buffers and oneDNN accumulates in fp32 (brg:avx512_core_bf16 here).
#include <map>
#include <unordered_map>
#include <tuple>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "backend/cpu/backend_cpu.h"

namespace sft {

using dnnl::memory;
using Tag = memory::format_tag;

struct CpuBackend::Gemm {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  // Primitives by (transA, transB, M, N, K, dtype, accumulate, bias): built once per shape.
  std::map<std::tuple<bool, bool, int64_t, int64_t, int64_t, int, bool, bool>, std::pair<dnnl::matmul, memory::desc>> cache;
  std::vector<uint16_t> scratch[3];  // bf16 copies of activation operands
  // bf16 copies of weights, made once per pass: begin_pass() marks them stale (keeping the memory).
  struct CachedWeight {
    std::vector<uint16_t> data;
    bool valid = false;
  };
  std::unordered_map<const float*, CachedWeight> weight_cache;
  // Packed rows make the token count M differ from batch to batch, so new GEMM shapes keep
  // coming: primitives share one user scratchpad and the cache is bounded, else every shape keeps
  // its own JIT code and scratchpad and a long run's memory grows (1.41 GB instead of 0.92 GB
  // after the demo's 144 steps).
  static constexpr size_t kMaxPrimitives = 64;
  std::vector<uint8_t> scratchpad;

  // C (M, N) = / += op(A) (M, K) · op(B) (K, N) (+ bias (N)); A is stored (K, M) when transA,
  // B is stored (N, K) when transB. A and B share one dtype (f32 or bf16); C and bias are f32.
  void run(bool transA, bool transB, int64_t M, int64_t N, int64_t K, const void* A, const void* B,
           float* C, const float* bias, memory::data_type dt, bool accumulate) {
    auto key = std::make_tuple(transA, transB, M, N, K, int(dt), accumulate, bias != nullptr);
    auto it = cache.find(key);
    memory::desc a_md({M, K}, dt, transA ? Tag::ba : Tag::ab);
    memory::desc b_md({K, N}, dt, transB ? Tag::ba : Tag::ab);
    memory::desc c_md({M, N}, memory::data_type::f32, Tag::ab);
    memory::desc bias_md({1, N}, memory::data_type::f32, Tag::ab);
    if (it == cache.end()) {
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      if (accumulate) {
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
      }
      auto desc = bias ? dnnl::matmul::desc(a_md, b_md, bias_md, c_md) : dnnl::matmul::desc(a_md, b_md, c_md);
      if (cache.size() >= kMaxPrimitives) cache.clear();
      dnnl::matmul::primitive_desc pd(desc, attr, engine);
      const size_t need = pd.scratchpad_desc().get_size();
      if (scratchpad.size() < need) scratchpad.resize(need);
      it = cache.emplace(key, std::make_pair(dnnl::matmul(pd), pd.scratchpad_desc())).first;
    }
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(a_md, engine, const_cast<void*>(A))},
        {DNNL_ARG_WEIGHTS, memory(b_md, engine, const_cast<void*>(B))},
        {DNNL_ARG_DST, memory(c_md, engine, C)}};
    if (bias) args.emplace(DNNL_ARG_BIAS, memory(bias_md, engine, const_cast<float*>(bias)));
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(it->second.second, engine, scratchpad.data()));
    it->second.first.execute(stream, args);
    stream.wait();
  }

  // The operand as the GEMM reads it: the fp32 data itself, or its bf16 rounding in scratch[slot].
  const void* operand(const Tensor& t, DType dt, int slot) {
    if (dt == DType::f32) return t.f32();
    auto& buf = scratch[slot];
    if (buf.size() < size_t(t.numel())) buf.resize(size_t(t.numel()));
    convert_f32_to_bf16(t.f32(), buf.data(), size_t(t.numel()));
    return buf.data();
  }

  const void* weight(const Tensor& w, DType dt) {
    if (dt == DType::f32) return w.f32();
    CachedWeight& c = weight_cache[w.f32()];
    if (!c.valid || c.data.size() != size_t(w.numel())) {
      c.data.resize(size_t(w.numel()));
      convert_f32_to_bf16(w.f32(), c.data.data(), c.data.size());
      c.valid = true;
    }
    return c.data.data();
  }
};

static memory::data_type dnnl_type(DType dt) {
  return dt == DType::bf16 ? memory::data_type::bf16 : memory::data_type::f32;
}

CpuBackend::CpuBackend() : gemm_(std::make_unique<Gemm>()) {
  dnnl::set_primitive_cache_capacity(0);  // Gemm::cache is the one primitive cache (bounded)
}
CpuBackend::~CpuBackend() = default;

void CpuBackend::set_matmul_dtype(DType dt) {
  SFT_CHECK(dt == DType::f32 || dt == DType::bf16, "cpu", "matmul dtype must be f32 or bf16, got {}",
            dtype_name(dt));
  matmul_dtype_ = dt;
}

void CpuBackend::begin_pass() {
  for (auto& [ptr, cached] : gemm_->weight_cache) cached.valid = false;
}

void CpuBackend::linear_forward(Tensor out, Tensor x, Tensor w, Tensor bias, bool accumulate) {
  const int64_t N = x.numel() / x.dim(-1), IC = x.dim(-1), OC = w.dim(0);
  SFT_ASSERT(w.dim(1) == IC && out.numel() == N * OC && (bias.empty() || bias.numel() == OC));
  const void* a = gemm_->operand(x, matmul_dtype_, 0);
  const void* b = gemm_->weight(w, matmul_dtype_);
  gemm_->run(false, true, N, OC, IC, a, b, out.f32(), bias.empty() ? nullptr : bias.f32(),
             dnnl_type(matmul_dtype_), accumulate);
}

void CpuBackend::linear_backward(Tensor dx, Tensor dw, Tensor dbias, Tensor dout, Tensor x,
                                 Tensor w, bool accumulate_dx) {
  const int64_t N = x.numel() / x.dim(-1), IC = x.dim(-1), OC = w.dim(0);
  SFT_ASSERT(w.dim(1) == IC && dout.numel() == N * OC);
  const auto dt = dnnl_type(matmul_dtype_);
  const void* g = gemm_->operand(dout, matmul_dtype_, 0);  // (N, OC), used by both GEMMs
  if (!dx.empty()) {
    const void* b = gemm_->weight(w, matmul_dtype_);
    gemm_->run(false, false, N, IC, OC, g, b, dx.f32(), nullptr, dt, accumulate_dx);
  }
  const void* a = gemm_->operand(x, matmul_dtype_, 2);
  gemm_->run(true, false, OC, IC, N, g, a, dw.f32(), nullptr, dt, true);  // dw += doutᵀ·x
  if (!dbias.empty()) {
    float* db = dbias.f32();
    const float* d = dout.f32();
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < OC; ++o) {
      float s = 0.0f;
      for (int64_t n = 0; n < N; ++n) s += d[n * OC + o];
      db[o] += s;
    }
  }
}

}  // namespace sft
