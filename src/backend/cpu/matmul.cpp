// Linear layers on the CPU: out = x·wᵀ + b and its backward (dx = dout·w, dw += doutᵀ·x), weights
// stored (OC, IC) row-major as torch nn.Linear, fp32 or bf16 (a gathered bf16 unit). Each GEMM
// family (bf16, fp32) runs on the route gemm_route.h chose for this CPU: our AMX GEMM (weights
// rounded once per update into the blocked layout of pack_b.h, activations packed per call in the
// layout they come in), oneDNN bf16 matmul (AMX tiles or vdpbf16ps; activations rounded and
// transposed per call, weights once per update into oneDNN's packed layout), our AVX-512 GEMM
// (rounding while packing), or oneDNN fp32. A/B runs: bench/gemm_ab.sh.
#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "backend/cpu/backend_cpu.h"
#include "backend/cpu/gemm.h"
#include "backend/cpu/gemm_route.h"
#include "backend/cpu/pack_b.h"
#include "core/aligned_vector.h"
#include "core/check.h"

namespace sft {

using dnnl::memory;
using Tag = memory::format_tag;

namespace {

// oneDNN engine, stream and primitives by (transA, transB, M, N, K, dtype, accumulate, bias,
// packed B), built once per shape; one per calling thread (onednn()).
struct OneDnn {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  struct Prim {
    dnnl::matmul matmul;
    memory::desc scratchpad, packed_b;  // packed_b: the weights layout the primitive chose (any)
  };
  std::map<std::tuple<bool, bool, int64_t, int64_t, int64_t, int, bool, bool, bool>, Prim> cache;
  AlignedVector<uint16_t> scratch[2];  // bf16 operands of gemm_onednn
  // Packed rows make the token count M differ from batch to batch, so new GEMM shapes keep
  // coming: primitives share one user scratchpad and the cache is bounded (oneDNN's own cache
  // off), else every shape keeps its own JIT code and scratchpad and a long run's memory grows
  // (1.41 GB instead of 0.92 GB after the demo's 144 steps).
  static constexpr size_t kMaxPrimitives = 64;
  AlignedVector<uint8_t> scratchpad;
  OneDnn() { dnnl::set_primitive_cache_capacity(0); }

  static memory::desc a_desc(const cpu::GemmArgs& g, memory::data_type dt) {
    return memory::desc({g.M, g.K}, dt, g.trans_a ? Tag::ba : Tag::ab);
  }
  static memory::desc b_desc(const cpu::GemmArgs& g, memory::data_type dt) {
    return memory::desc({g.K, g.N}, dt, g.trans_b ? Tag::ba : Tag::ab);
  }

  // The primitive for g; packed: B in the layout oneDNN prefers (format any), see packed_b.
  Prim& prim(const cpu::GemmArgs& g, memory::data_type dt, bool packed) {
    SFT_ASSERT(g.lda == (g.trans_a ? g.M : g.K) && g.ldb == (g.trans_b ? g.K : g.N) && g.ldc == g.N);
    const auto key = std::make_tuple(g.trans_a, g.trans_b, g.M, g.N, g.K, int(dt), g.accumulate, g.bias != nullptr,
                                     packed);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (g.accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    const memory::desc a_md = a_desc(g, dt), c_md({g.M, g.N}, memory::data_type::f32, Tag::ab);
    const memory::desc b_md = packed ? memory::desc({g.K, g.N}, dt, Tag::any) : b_desc(g, dt);
    const memory::desc bias_md({1, g.N}, memory::data_type::f32, Tag::ab);
    auto desc = g.bias ? dnnl::matmul::desc(a_md, b_md, bias_md, c_md) : dnnl::matmul::desc(a_md, b_md, c_md);
    if (cache.size() >= kMaxPrimitives) cache.clear();
    dnnl::matmul::primitive_desc pd(desc, attr, engine);
    const size_t need = pd.scratchpad_desc().get_size();
    if (scratchpad.size() < need) scratchpad.resize(need);
    return cache.emplace(key, Prim{dnnl::matmul(pd), pd.scratchpad_desc(), pd.weights_desc()}).first->second;
  }

  // C (M, N) = / += op(A) (M, K) · op(B) (K, N) (+ bias (N)); A and B share one dtype; B either in
  // g's plain layout or, when b_packed, already in prim(g, dt, true).packed_b.
  void run(const cpu::GemmArgs& g, const void* A, const void* B, memory::data_type dt, bool b_packed = false) {
    Prim& p = prim(g, dt, b_packed);
    const memory::desc c_md({g.M, g.N}, memory::data_type::f32, Tag::ab);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(a_desc(g, dt), engine, const_cast<void*>(A))},
        {DNNL_ARG_WEIGHTS, memory(b_packed ? p.packed_b : b_desc(g, dt), engine, const_cast<void*>(B))},
        {DNNL_ARG_DST, memory(c_md, engine, g.C)}};
    if (g.bias)
      args.emplace(DNNL_ARG_BIAS, memory(memory::desc({1, g.N}, memory::data_type::f32, Tag::ab), engine,
                                         const_cast<float*>(g.bias)));
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(p.scratchpad, engine, scratchpad.data()));
    p.matmul.execute(stream, args);
    stream.wait();
  }

  // B (plain bf16, g's layout) reordered into `layout` at dst (layout.get_size() bytes).
  void pack(const cpu::GemmArgs& g, const uint16_t* B, const memory::desc& layout, void* dst) {
    memory src(b_desc(g, memory::data_type::bf16), engine, const_cast<uint16_t*>(B));
    memory out(layout, engine, dst);
    dnnl::reorder(src, out).execute(stream, src, out);
    stream.wait();
  }
};

// One per thread: the in-process test worlds (dist/comm_threads) run a rank per thread, each with
// its own CpuBackend, and the primitive cache and scratch are not shared state they could race on.
OneDnn& onednn() {
  thread_local OneDnn o;
  return o;
}

uint16_t* grow(AlignedVector<uint16_t>& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

const uint16_t* round_into(AlignedVector<uint16_t>& buf, const float* x, size_t n) {
  grow(buf, n);
  convert_f32_to_bf16(x, buf.data(), n);
  return buf.data();
}

// y = x rounded to bf16, kept as fp32 (the fp32-math routes' bf16 operands on oneDNN)
const float* round_f32_into(AlignedVector<float>& buf, const float* x, size_t n) {
  if (buf.size() < n) buf.resize(n);
  float* y = buf.data();
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
  for (size_t i = 0; i < n; ++i) y[i] = bf16_to_f32(f32_to_bf16(x[i]));
  return y;
}

const float* widen_into(AlignedVector<float>& buf, const uint16_t* x, size_t n) {
  if (buf.size() < n) buf.resize(n);
  convert_bf16_to_f32(x, buf.data(), n);
  return buf.data();
}

}  // namespace

namespace cpu {

bool gemm_avx512_supported(bool bf16) {
  const CpuFeatures& f = cpu_features();
  return bf16 ? f.avx512_bf16 : f.avx512;
}

void gemm_onednn(const GemmArgs& g, bool bf16) {
  SFT_ASSERT(!g.B16 && !g.round_bf16);
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

// The routes of this backend and the derived copies of weights: for the oneDNN bf16 routes each
// weight's bf16 rounding in the two packed layouts of oneDNN's kernels (forward B = wᵀ, dx B = w;
// repacking per call measured 10-40% slower on AMX), keyed by the weight's address and kept until the weight is written (invalidate_weight_copies, or this
// backend's own copy / fill_zero / scale / adamw_step / dealloc over it). Until a caller has used
// invalidate_weight_copies once (the parameter store's contract), begin_pass drops them too.
struct CpuBackend::Gemm {
  cpu::GemmRoutes routes = cpu::gemm_routes();
  // SFT_BF16_ACTIVATIONS=0 keeps every activation in fp32 (A/B runs and the tests' comparison)
  bool bf16_activations_allowed = [] {
    const char* e = std::getenv("SFT_BF16_ACTIVATIONS");
    return !(e && std::string_view(e) == "0");
  }();
  bool contract_seen = false;  // the caller invalidates after its own writes: keep copies across passes
  AlignedVector<uint16_t> act16[2];  // bf16 activations of one call (per-call scratch)
  AlignedVector<float> act32[2];     // fp32-rounded activations / widened weights (onednn-fp32 route)
  struct Packed {
    memory::desc layout;
    AlignedVector<uint8_t> data;
    bool valid = false;
  };
  struct WeightCopies {
    size_t bytes = 0;  // extent of the source weight, for range checks
    Packed packed[2];  // bf16 values, [0] forward B = wᵀ (IC, OC), [1] dx B = w (OC, IC)
  };
  std::map<const char*, WeightCopies> weights;
  AlignedVector<uint16_t> pack_src;  // an fp32 weight's bf16 rounding on its way into a packed layout

  const cpu::RouteChoice& route(DType dt) const { return dt == DType::bf16 ? routes.bf16 : routes.fp32; }
  static bool onednn_bf16(cpu::GemmRoute r) { return r == cpu::GemmRoute::amx || r == cpu::GemmRoute::onednn_bf16; }
  // The routes that take bf16 operands as they are and hold packed bf16 weight copies.
  static bool packs_bf16(cpu::GemmRoute r) { return onednn_bf16(r) || r == cpu::GemmRoute::ours_amx; }

  // Copies derived from memory overlapping [p, p + bytes) are stale (erase: the memory is freed).
  void written(const void* ptr, size_t bytes, bool erase) {
    if (weights.empty() || bytes == 0) return;
    const char* lo = static_cast<const char*>(ptr);
    auto it = weights.upper_bound(lo);
    if (it != weights.begin()) --it;  // the entry starting at or before lo may reach into the range
    while (it != weights.end() && it->first < lo + bytes) {
      if (it->first + it->second.bytes > lo) {
        if (erase) {
          it = weights.erase(it);
          continue;
        }
        for (Packed& p : it->second.packed) p.valid = false;
      }
      ++it;
    }
  }

  // w's bf16 values packed for form (0 forward, 1 dx) of GEMM g (whose B is the plain w or wᵀ),
  // derived when missing or stale (2 bytes per parameter and form). sibling: the GEMM of the other
  // form, when known; if that form has been used before (training: the dx GEMM after the forward)
  // and is stale too, it is packed from the same bf16 rounding of w (one rounding per update).
  const void* weight_packed(const Tensor& w, const cpu::GemmArgs& g, int form, const cpu::GemmArgs* sibling) {
    WeightCopies& c = weights[static_cast<const char*>(w.data)];
    if (c.bytes != w.nbytes()) {  // a new weight at this address, or another view of it
      c.bytes = w.nbytes();
      for (Packed& p : c.packed) p.valid = false;
    }
    Packed& p = c.packed[form];
    if (ours_amx()) return weight_blocked(w, c, form, sibling != nullptr);
    // layouts by value: prim() may clear its cache (and the descs in it) when it builds another
    const memory::desc layout = onednn().prim(g, memory::data_type::bf16, true).packed_b;
    if (!p.valid || p.layout != layout) {
      const uint16_t* src16 = nullptr;  // w's bf16 rounding, when a oneDNN reorder needs it
      auto fill = [&](Packed& q, const cpu::GemmArgs& h, const memory::desc& lay) {
        q.layout = lay;
        q.data.resize(lay.get_size());
        if (cpu::is_blocked_b(lay.data, h.K, h.N)) {  // rounded (or, bf16, laid) straight into place
          uint16_t* dst = reinterpret_cast<uint16_t*>(q.data.data());
          if (w.dtype == DType::f32) cpu::pack_b_bf16(w.f32(), w.dim(0), w.dim(1), h.trans_b, dst);
          else cpu::pack_b_bf16(w.bf16(), w.dim(0), w.dim(1), h.trans_b, dst);
        } else {
          if (!src16) src16 = w.dtype == DType::bf16 ? w.bf16() : round_into(pack_src, w.f32(), size_t(w.numel()));
          onednn().pack(h, src16, lay, q.data.data());
        }
        q.valid = true;
      };
      Packed& other = c.packed[1 - form];
      if (sibling && !other.valid && !other.data.empty()) {
        const memory::desc other_layout = onednn().prim(*sibling, memory::data_type::bf16, true).packed_b;
        if (g.trans_b != sibling->trans_b && cpu::is_blocked_b(layout.data, g.K, g.N) &&
            cpu::is_blocked_b(other_layout.data, sibling->K, sibling->N)) {  // both forms from one read of w
          for (auto [q, lay] : {std::pair{&p, &layout}, std::pair{&other, &other_layout}}) {
            q->layout = *lay;
            q->data.resize(lay->get_size());
            q->valid = true;
          }
          Packed& fwd = g.trans_b ? p : other;  // the forward form is the one whose B is wᵀ
          Packed& dx = g.trans_b ? other : p;
          uint16_t *f16 = reinterpret_cast<uint16_t*>(fwd.data.data()), *d16 = reinterpret_cast<uint16_t*>(dx.data.data());
          if (w.dtype == DType::f32) cpu::pack_b_bf16_both(w.f32(), w.dim(0), w.dim(1), f16, d16);
          else cpu::pack_b_bf16_both(w.bf16(), w.dim(0), w.dim(1), f16, d16);
          return p.data.data();
        }
        fill(p, g, layout);
        fill(other, *sibling, other_layout);
      } else {
        fill(p, g, layout);
      }
    }
    return p.data.data();
  }

  // Our AMX GEMM runs the bf16 GEMMs: weights in pack_b.h's blocked layout, activations packed
  // (and rounded, when fp32) per call in whatever layout they come.
  bool ours_amx() const { return routes.bf16.route == cpu::GemmRoute::ours_amx; }
  // w's bf16 values in BlockedB layout for form 0 (B = wᵀ) or 1 (B = w); both from one read of w
  // when the other form is stale too and has been used (training).
  const void* weight_blocked(const Tensor& w, WeightCopies& c, int form, bool both) {
    Packed& p = c.packed[form];
    if (p.valid) return p.data.data();
    const int64_t OC = w.dim(0), IC = w.dim(1);
    auto size = [&](int f) { return size_t(cpu::BlockedB{f == 0 ? IC : OC, f == 0 ? OC : IC}.size()) * 2; };
    Packed& other = c.packed[1 - form];
    if (both && !other.valid && !other.data.empty()) {
      c.packed[0].data.resize(size(0)), c.packed[1].data.resize(size(1));
      uint16_t *f16 = reinterpret_cast<uint16_t*>(c.packed[0].data.data()), *d16 = reinterpret_cast<uint16_t*>(c.packed[1].data.data());
      if (w.dtype == DType::f32) cpu::pack_b_bf16_both(w.f32(), OC, IC, f16, d16);
      else cpu::pack_b_bf16_both(w.bf16(), OC, IC, f16, d16);
      c.packed[0].valid = c.packed[1].valid = true;
      return p.data.data();
    }
    p.data.resize(size(form));
    uint16_t* dst = reinterpret_cast<uint16_t*>(p.data.data());
    if (w.dtype == DType::f32) cpu::pack_b_bf16(w.f32(), OC, IC, form == 0, dst);
    else cpu::pack_b_bf16(w.bf16(), OC, IC, form == 0, dst);
    p.valid = true;
    return p.data.data();
  }

  // Runs g (A fp32; B fp32 in g.B, or bf16 in g.B16) in precision dt on its route. x16 / a16:
  // bf16 roundings of A made earlier in this call (nullptr: made here). w: the weight when B is
  // one (its copies are cached), with form 0 forward, 1 dx; absent for dw.
  void run(cpu::GemmArgs g, DType dt, const Tensor* w, int form, const uint16_t* a16 = nullptr,
           const cpu::GemmArgs* sibling = nullptr) {
    // Empty shapes (a micro-batch without rows) never reach a kernel: oneDNN's primitive creation
    // divides by zero on them. C (M, N) has no elements, or K = 0 leaves C = C (accumulate) or bias.
    if (g.M == 0 || g.N == 0) return;
    if (g.K == 0) {
      if (!g.accumulate)
        for (int64_t i = 0; i < g.M; ++i)
          for (int64_t j = 0; j < g.N; ++j) g.C[i * g.ldc + j] = g.bias ? g.bias[j] : 0.0f;
      return;
    }
    const cpu::GemmRoute r = route(dt).route;
    const bool bf16 = dt == DType::bf16;
    if (r == cpu::GemmRoute::ours_bf16 || r == cpu::GemmRoute::ours_fp32) {
      g.round_bf16 = bf16 && r == cpu::GemmRoute::ours_fp32;
      if (r == cpu::GemmRoute::ours_bf16 && bf16) cpu::gemm_bf16_avx512(g);
      else cpu::gemm_f32_avx512(g);
      return;
    }
    if (r == cpu::GemmRoute::ours_amx && bf16) {  // A rounded while packed; B blocked
      if (w) {
        const cpu::GemmArgs plain = [&] { auto h = g; h.B16 = nullptr; return h; }();
        return cpu::gemm_amx(plain, a16, static_cast<const uint16_t*>(weight_packed(*w, plain, form, sibling)));
      }
      SFT_ASSERT(g.ldb == (g.trans_b ? g.K : g.N));  // B (K, N), or (N, K) when trans_b, dense
      uint16_t* b = grow(act16[1], size_t(cpu::BlockedB{g.K, g.N}.size()));
      const int64_t rows = g.trans_b ? g.N : g.K, cols = g.trans_b ? g.K : g.N;
      if (g.B16) cpu::pack_b_bf16(g.B16, rows, cols, g.trans_b, b);
      else cpu::pack_b_bf16(g.B, rows, cols, g.trans_b, b);
      return cpu::gemm_amx(g, a16, b);
    }
    if (onednn_bf16(r) && bf16) {
      if (!a16) a16 = round_into(act16[0], g.A, size_t(g.M * g.K));
      if (w) {
        const cpu::GemmArgs plain = [&] { auto h = g; h.B16 = nullptr; return h; }();
        onednn().run(plain, a16, weight_packed(*w, plain, form, sibling), memory::data_type::bf16, true);
      } else {
        const uint16_t* b16 = g.B16 ? g.B16 : round_into(act16[1], g.B, size_t(g.K * g.N));
        onednn().run(g, a16, b16, memory::data_type::bf16);
      }
      return;
    }
    // oneDNN fp32 (the onednn routes in fp32, and bf16 on CPUs without a fast bf16 instruction)
    const float* A = bf16 ? round_f32_into(act32[0], g.A, size_t(g.M * g.K)) : g.A;
    const float* B = g.B16 ? widen_into(act32[1], g.B16, size_t(g.K * g.N))
                           : bf16 ? round_f32_into(act32[1], g.B, size_t(g.K * g.N)) : g.B;
    g.A = A, g.B = B, g.B16 = nullptr;
    onednn().run(g, A, B, memory::data_type::f32);
  }
};

CpuBackend::CpuBackend() : gemm_(std::make_unique<Gemm>()) {}
CpuBackend::~CpuBackend() = default;

std::string CpuBackend::route_report() const { return cpu::gemm_route_report(gemm_->routes, cpu::cpu_features()); }

void CpuBackend::set_matmul_dtype(DType dt) {
  SFT_CHECK(dt == DType::f32 || dt == DType::bf16, "cpu", "matmul dtype must be f32 or bf16, got {}",
            dtype_name(dt));
  matmul_dtype_ = dt;
}

void CpuBackend::begin_pass() {
  if (gemm_->contract_seen) return;
  for (auto& [ptr, c] : gemm_->weights)
    for (auto& p : c.packed) p.valid = false;
}

void CpuBackend::invalidate_weight_copies(const void* ptr, size_t bytes) {
  gemm_->contract_seen = true;
  gemm_->written(ptr, bytes, false);
}

void CpuBackend::weights_written(const void* ptr, size_t bytes, bool freed) {
  if (freed && ptr) bytes = malloc_usable_size(const_cast<void*>(ptr));
  gemm_->written(ptr, bytes, freed);
}

bool CpuBackend::bf16_activations() const {
  return gemm_->bf16_activations_allowed && matmul_dtype_ == DType::bf16 && Gemm::packs_bf16(gemm_->routes.bf16.route);
}

int CpuBackend::bf16_weight_copy_bytes() const { return Gemm::packs_bf16(gemm_->routes.bf16.route) ? 4 : 0; }

void CpuBackend::linear_forward(Tensor out, Tensor x, Tensor w, Tensor bias, bool accumulate) {
  const int64_t N = x.numel() / x.dim(-1), IC = x.dim(-1), OC = w.dim(0);
  SFT_CHECK(w.dim(1) == IC && out.numel() == N * OC && (bias.empty() || bias.numel() == OC) &&
                (w.dtype == DType::f32 || w.dtype == DType::bf16),
            "cpu", "linear_forward: x (N {}, IC {}), w ({}, {}) {}, out {} elements, bias {}: expected w (OC, IC) "
            "f32/bf16, out N*OC, bias OC", N, IC, w.dim(0), w.dim(1), dtype_name(w.dtype), out.numel(), bias.numel());
  const bool x16 = x.dtype == DType::bf16;
  SFT_CHECK(!x16 || bf16_activations(), "cpu",
            "linear_forward: x is bf16, but bf16 activations are off here (matmul dtype {}, bf16 GEMM route {})",
            dtype_name(matmul_dtype_), cpu::gemm_route_name(gemm_->routes.bf16.route));
  const bool w16 = w.dtype == DType::bf16;
  // out (N, OC) = / += x (N, IC) · wᵀ (+ bias)
  const cpu::GemmArgs g{.trans_a = false, .trans_b = true, .M = N, .N = OC, .K = IC, .A = x16 ? nullptr : x.f32(),
                        .lda = IC, .B = w16 ? nullptr : w.f32(), .ldb = IC, .C = out.f32(), .ldc = OC,
                        .bias = bias.empty() ? nullptr : bias.f32(), .accumulate = accumulate,
                        .B16 = w16 ? w.bf16() : nullptr};
  // the backward's dx GEMM (B = w), whose packed copy is refreshed from the same rounding
  const cpu::GemmArgs dx{.trans_a = false, .trans_b = false, .M = N, .N = IC, .K = OC, .A = nullptr, .lda = OC,
                         .B = nullptr, .ldb = IC, .C = nullptr, .ldc = IC, .bias = nullptr, .accumulate = false};
  gemm_->run(g, matmul_dtype_, &w, 0, x16 ? x.bf16() : nullptr, &dx);
}

void CpuBackend::linear_backward(Tensor dx, Tensor dw, Tensor dbias, Tensor dout, Tensor x,
                                 Tensor w, bool accumulate_dx) {
  const int64_t N = x.numel() / x.dim(-1), IC = x.dim(-1), OC = w.dim(0);
  SFT_CHECK(w.dim(1) == IC && dout.numel() == N * OC && dw.numel() == OC * IC &&
                (w.dtype == DType::f32 || w.dtype == DType::bf16),
            "cpu", "linear_backward: x (N {}, IC {}), w ({}, {}) {}, dout {} / dw {} elements: expected w (OC, IC) "
            "f32/bf16, dout N*OC, dw OC*IC", N, IC, w.dim(0), w.dim(1), dtype_name(w.dtype), dout.numel(), dw.numel());
  const DType dt = matmul_dtype_;
  const bool w16 = w.dtype == DType::bf16, x16 = x.dtype == DType::bf16, dout16_in = dout.dtype == DType::bf16;
  SFT_CHECK(!(x16 || dout16_in) || (bf16_activations() && !(dout16_in && !dbias.empty())), "cpu",
            "linear_backward: x {} / dout {}: bf16 operands need bf16 activations on (matmul dtype {}, bf16 GEMM "
            "route {}), and a bias gradient needs an fp32 dout", dtype_name(x.dtype), dtype_name(dout.dtype),
            dtype_name(matmul_dtype_), cpu::gemm_route_name(gemm_->routes.bf16.route));
  // On the oneDNN bf16 routes the operands are rounded here, each once: dout for dx as is, and
  // doutᵀ and xᵀ for dw, so that the dw GEMM reads plain A and a (N, K) B, the layouts its AMX
  // kernel runs fastest on (1.5 vs 0.8 TFLOP/s for a transposed A on a 2-core Xeon, base gate/up).
  // On our AMX route nothing is copied here: dx packs dout (rounding an fp32 one) as its A, and
  // dw packs doutᵀ straight from dout and x into the blocked B layout.
  const bool ours = dt == DType::bf16 && gemm_->ours_amx();
  const bool rounded_here = dt == DType::bf16 && Gemm::onednn_bf16(gemm_->routes.bf16.route);
  uint16_t* dout16 = dout16_in ? const_cast<uint16_t*>(dout.bf16()) : nullptr;  // dout (N, OC) in bf16, for dx
  uint16_t* doutT = nullptr;   // doutᵀ (OC, N) rounded, for dw
  if (rounded_here) {          // both from one read of dout
    doutT = grow(gemm_->act16[1], size_t(dout.numel()));
    if (dout16_in) {  // stored in bf16 by the op that produced it: only the transpose is made
      transpose_bf16(dout16, N, OC, doutT);
    } else {
      if (!dx.empty()) dout16 = grow(gemm_->act16[0], size_t(dout.numel()));
      convert_f32_to_bf16_transposed(dout.f32(), N, OC, doutT, dout16);
    }
  }
  if (!dx.empty()) {  // dx (N, IC) = / += dout (N, OC) · w (OC, IC)
    const cpu::GemmArgs g{.trans_a = false, .trans_b = false, .M = N, .N = IC, .K = OC,
                          .A = dout16_in ? nullptr : dout.f32(), .lda = OC, .B = w16 ? nullptr : w.f32(), .ldb = IC, .C = dx.f32(), .ldc = IC,
                          .bias = nullptr, .accumulate = accumulate_dx, .B16 = w16 ? w.bf16() : nullptr};
    gemm_->run(g, dt, &w, 1, dout16);
  }
  if (ours) {  // dw (OC, IC) += doutᵀ (OC, N) · x (N, IC), x in the blocked layout
    uint16_t* xb = grow(gemm_->act16[1], size_t(cpu::BlockedB{N, IC}.size()));
    if (x16) cpu::pack_b_bf16(x.bf16(), N, IC, false, xb);
    else cpu::pack_b_bf16(x.f32(), N, IC, false, xb);
    const cpu::GemmArgs g{.trans_a = true, .trans_b = false, .M = OC, .N = IC, .K = N,
                          .A = dout16_in ? nullptr : dout.f32(), .lda = OC, .B = nullptr, .ldb = IC,
                          .C = dw.f32(), .ldc = IC, .bias = nullptr, .accumulate = true};
    cpu::gemm_amx(g, dout16, xb);
  } else if (rounded_here) {  // dw (OC, IC) += doutᵀ (OC, N) · (xᵀ (IC, N))ᵀ
    uint16_t* xT = grow(gemm_->act16[0], size_t(x.numel()));  // dout16 is no longer needed
    if (x16) transpose_bf16(x.bf16(), N, IC, xT);
    else convert_f32_to_bf16_transposed(x.f32(), N, IC, xT);
    const cpu::GemmArgs g{.trans_a = false, .trans_b = true, .M = OC, .N = IC, .K = N, .A = nullptr,
                          .lda = N, .B = nullptr, .ldb = N, .C = dw.f32(), .ldc = IC, .bias = nullptr,
                          .accumulate = true, .B16 = xT};
    gemm_->run(g, dt, nullptr, 0, doutT);
  } else {  // dw (OC, IC) += doutᵀ (OC, N) · x (N, IC)
    const cpu::GemmArgs g{.trans_a = true, .trans_b = false, .M = OC, .N = IC, .K = N, .A = dout.f32(),
                          .lda = OC, .B = x.f32(), .ldb = IC, .C = dw.f32(), .ldc = IC, .bias = nullptr,
                          .accumulate = true};
    gemm_->run(g, dt, nullptr, 0);
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
