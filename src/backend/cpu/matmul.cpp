// Linear layers on the CPU: out = x·wᵀ + b and its backward (dx = dout·w, dw += doutᵀ·x), weights
// stored (OC, IC) row-major as torch nn.Linear. GEMMs run on oneDNN 2.6 matmul (transposes as
// memory-format tags, bf16 operands rounded into scratch, weights once per pass) only where the CPU
// lacks the ISA of our AVX-512 GEMM (gemm_avx512.cpp), which runs every other GEMM: see use_ours().
// SFT_GEMM=onednn sends every GEMM to oneDNN (A/B runs: bench/gemm_ab.sh).
#include <cstdlib>
#include <map>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "backend/cpu/backend_cpu.h"
#include "backend/cpu/gemm.h"
#include "core/check.h"

namespace sft {

using dnnl::memory;
using Tag = memory::format_tag;

namespace {

// oneDNN engine, stream and primitives by (transA, transB, M, N, K, dtype, accumulate, bias),
// built once per shape; one per process.
struct OneDnn {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<std::tuple<bool, bool, int64_t, int64_t, int64_t, int, bool, bool>, std::pair<dnnl::matmul, memory::desc>> cache;
  std::vector<uint16_t> scratch[2];  // bf16 operands of gemm_onednn
  // Packed rows make the token count M differ from batch to batch, so new GEMM shapes keep
  // coming: primitives share one user scratchpad and the cache is bounded (oneDNN's own cache
  // off), else every shape keeps its own JIT code and scratchpad and a long run's memory grows
  // (1.41 GB instead of 0.92 GB after the demo's 144 steps).
  static constexpr size_t kMaxPrimitives = 64;
  std::vector<uint8_t> scratchpad;
  OneDnn() { dnnl::set_primitive_cache_capacity(0); }

  // C (M, N) = / += op(A) (M, K) · op(B) (K, N) (+ bias (N)); A and B share one dtype.
  void run(const cpu::GemmArgs& g, const void* A, const void* B, memory::data_type dt) {
    SFT_ASSERT(g.lda == (g.trans_a ? g.M : g.K) && g.ldb == (g.trans_b ? g.K : g.N) && g.ldc == g.N);
    auto key = std::make_tuple(g.trans_a, g.trans_b, g.M, g.N, g.K, int(dt), g.accumulate, g.bias != nullptr);
    auto it = cache.find(key);
    memory::desc a_md({g.M, g.K}, dt, g.trans_a ? Tag::ba : Tag::ab);
    memory::desc b_md({g.K, g.N}, dt, g.trans_b ? Tag::ba : Tag::ab);
    memory::desc c_md({g.M, g.N}, memory::data_type::f32, Tag::ab);
    memory::desc bias_md({1, g.N}, memory::data_type::f32, Tag::ab);
    if (it == cache.end()) {
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      if (g.accumulate) {
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
      }
      auto desc = g.bias ? dnnl::matmul::desc(a_md, b_md, bias_md, c_md)
                         : dnnl::matmul::desc(a_md, b_md, c_md);
      if (cache.size() >= kMaxPrimitives) cache.clear();
      dnnl::matmul::primitive_desc pd(desc, attr, engine);
      const size_t need = pd.scratchpad_desc().get_size();
      if (scratchpad.size() < need) scratchpad.resize(need);
      it = cache.emplace(key, std::make_pair(dnnl::matmul(pd), pd.scratchpad_desc())).first;
    }
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(a_md, engine, const_cast<void*>(A))},
        {DNNL_ARG_WEIGHTS, memory(b_md, engine, const_cast<void*>(B))},
        {DNNL_ARG_DST, memory(c_md, engine, g.C)}};
    if (g.bias) args.emplace(DNNL_ARG_BIAS, memory(bias_md, engine, const_cast<float*>(g.bias)));
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(it->second.second, engine, scratchpad.data()));
    it->second.first.execute(stream, args);
    stream.wait();
  }
};

OneDnn& onednn() {
  static OneDnn o;
  return o;
}

const uint16_t* round_into(std::vector<uint16_t>& buf, const float* x, size_t n) {
  if (buf.size() < n) buf.resize(n);
  convert_f32_to_bf16(x, buf.data(), n);
  return buf.data();
}

}  // namespace

namespace cpu {

bool gemm_avx512_supported(bool bf16) {
  static const bool f = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  static const bool b = f && __builtin_cpu_supports("avx512bf16");
  return bf16 ? b : f;
}

void gemm_onednn(const GemmArgs& g, bool bf16) {
  if (!bf16) return onednn().run(g, g.A, g.B, memory::data_type::f32);
  OneDnn& o = onednn();
  const uint16_t* a = round_into(o.scratch[0], g.A, size_t(g.M * g.K));
  const uint16_t* b = round_into(o.scratch[1], g.B, size_t(g.K * g.N));
  o.run(g, a, b, memory::data_type::bf16);
}

void gemm_onednn_bf16(const GemmArgs& g, const uint16_t* A_bf16, const uint16_t* B_bf16) {
  onednn().run(g, A_bf16, B_bf16, memory::data_type::bf16);
}

}  // namespace cpu

// Which GEMMs go to ours, and the bf16 copies of the oneDNN path: activations per call, weights
// once per pass (begin_pass() marks them stale, keeping the memory).
struct CpuBackend::Gemm {
  enum class Route { ours, onednn } route = Route::ours;  // SFT_GEMM
  std::vector<uint16_t> scratch[2];
  struct CachedWeight {
    std::vector<uint16_t> data;
    bool valid = false;
  };
  std::unordered_map<const float*, CachedWeight> weight_cache;

  Gemm() {
    const char* env = std::getenv("SFT_GEMM");
    const std::string_view v = env ? env : "";
    SFT_CHECK(v.empty() || v == "ours" || v == "onednn", "cpu",
              "SFT_GEMM is '{}', expected 'ours' or 'onednn' (or unset)", v);
    if (v == "onednn") route = Route::onednn;
  }

  // Ours wherever the CPU has its ISA. Measured end to end (bench/gemm_ab.sh, 2 threads, best of 2,
  // 2026-11-28, a 2-core EPYC whose register-only peaks are 234 GFLOP/s fp32 FMA and 468 vdpbf16ps):
  // tokens/s oneDNN -> ours: tiny bf16 3295 -> 3373, small bf16 1144 -> 1230, base bf16 446 -> 471;
  // fp32 tiny 1990 -> 1994, small 684 -> 717, base 271 -> 269. Both run the GEMMs of the presets at
  // 85-95% of those peaks (tests/ops GemmBench); ours saves the bf16 operand copies of the oneDNN
  // path (rounding happens while packing) and is faster on the LM head's dx and on K = 288.
  bool use_ours(DType dt) const {
    return route != Route::onednn && cpu::gemm_avx512_supported(dt == DType::bf16);
  }

  const uint16_t* activation(const Tensor& t, int slot) {
    return round_into(scratch[slot], t.f32(), size_t(t.numel()));
  }

  const uint16_t* weight(const Tensor& w) {
    CachedWeight& c = weight_cache[w.f32()];
    if (!c.valid || c.data.size() != size_t(w.numel())) {
      c.data.resize(size_t(w.numel()));
      convert_f32_to_bf16(w.f32(), c.data.data(), c.data.size());
      c.valid = true;
    }
    return c.data.data();
  }

  // g on ours if routed there; false when the caller must run it on oneDNN.
  bool run_ours(const cpu::GemmArgs& g, DType dt) {
    if (!use_ours(dt)) return false;
    if (dt == DType::bf16) cpu::gemm_bf16_avx512(g);
    else cpu::gemm_f32_avx512(g);
    return true;
  }
};

CpuBackend::CpuBackend() : gemm_(std::make_unique<Gemm>()) {}
CpuBackend::~CpuBackend() = default;

void CpuBackend::set_matmul_dtype(DType dt) {
  SFT_CHECK(dt == DType::f32 || dt == DType::bf16, "cpu", "matmul dtype must be f32 or bf16, got {}",
            dtype_name(dt));
  matmul_dtype_ = dt;
}

void CpuBackend::begin_pass() {
  for (auto& [ptr, cached] : gemm_->weight_cache) cached.valid = false;
}

void CpuBackend::invalidate_weight_copies(const void* ptr, size_t bytes) {
  const char* lo = static_cast<const char*>(ptr);
  for (auto& [w, cached] : gemm_->weight_cache) {
    const char* p = reinterpret_cast<const char*>(w);
    if (p < lo + bytes && lo < p + cached.data.size() * 4) cached.valid = false;
  }
}

bool CpuBackend::keeps_bf16_weight_copies() const { return !gemm_->use_ours(DType::bf16); }

void CpuBackend::linear_forward(Tensor out, Tensor x, Tensor w, Tensor bias, bool accumulate) {
  const int64_t N = x.numel() / x.dim(-1), IC = x.dim(-1), OC = w.dim(0);
  SFT_ASSERT(w.dim(1) == IC && out.numel() == N * OC && (bias.empty() || bias.numel() == OC));
  // out (N, OC) = / += x (N, IC) · wᵀ (+ bias)
  const cpu::GemmArgs g{.trans_a = false, .trans_b = true, .M = N, .N = OC, .K = IC, .A = x.f32(),
                        .lda = IC, .B = w.f32(), .ldb = IC, .C = out.f32(), .ldc = OC,
                        .bias = bias.empty() ? nullptr : bias.f32(), .accumulate = accumulate};
  const DType dt = matmul_dtype_;
  if (gemm_->run_ours(g, dt)) return;
  if (dt == DType::f32) cpu::gemm_onednn(g, false);
  else cpu::gemm_onednn_bf16(g, gemm_->activation(x, 0), gemm_->weight(w));
}

void CpuBackend::linear_backward(Tensor dx, Tensor dw, Tensor dbias, Tensor dout, Tensor x,
                                 Tensor w, bool accumulate_dx) {
  const int64_t N = x.numel() / x.dim(-1), IC = x.dim(-1), OC = w.dim(0);
  SFT_ASSERT(w.dim(1) == IC && dout.numel() == N * OC);
  const DType dt = matmul_dtype_;
  const uint16_t* dout16 = nullptr;  // dout's bf16 copy, made once for both oneDNN GEMMs
  auto dout_bf16 = [&] { return dout16 ? dout16 : (dout16 = gemm_->activation(dout, 0)); };
  if (!dx.empty()) {  // dx (N, IC) = / += dout (N, OC) · w (OC, IC)
    const cpu::GemmArgs g{.trans_a = false, .trans_b = false, .M = N, .N = IC, .K = OC, .A = dout.f32(),
                          .lda = OC, .B = w.f32(), .ldb = IC, .C = dx.f32(), .ldc = IC, .bias = nullptr,
                          .accumulate = accumulate_dx};
    if (gemm_->run_ours(g, dt)) {
    } else if (dt == DType::f32) {
      cpu::gemm_onednn(g, false);
    } else {
      cpu::gemm_onednn_bf16(g, dout_bf16(), gemm_->weight(w));
    }
  }
  {  // dw (OC, IC) += doutᵀ (OC, N) · x (N, IC)
    const cpu::GemmArgs g{.trans_a = true, .trans_b = false, .M = OC, .N = IC, .K = N, .A = dout.f32(),
                          .lda = OC, .B = x.f32(), .ldb = IC, .C = dw.f32(), .ldc = IC, .bias = nullptr,
                          .accumulate = true};
    if (gemm_->run_ours(g, dt)) {
    } else if (dt == DType::f32) {
      cpu::gemm_onednn(g, false);
    } else {
      cpu::gemm_onednn_bf16(g, dout_bf16(), gemm_->activation(x, 1));
    }
  }
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
