// The speed ceiling of a training step on this CPU's bf16 GEMM route, for issue 13's "85% of the
// ceiling" rule (bench/ceiling.sh combines it with a profile): every GEMM of a step of a preset
// (the layers' forward, dx and dw, the LM head in 1024-row chunks, attention's Q·Kᵀ, P·V and its
// backward's five products at causal FLOPs) timed alone in oneDNN with operands already in bf16
// and in the layouts the backend uses, no conversions. Disabled by default (a benchmark):
//   test_ops --gtest_also_run_disabled_tests --gtest_filter='GemmBench.DISABLED_StepCeiling'
// SFT_CEILING_PRESETS="tiny small base" picks presets; the machine should be otherwise idle.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/gemm.h"
#include "backend/cpu/pack_b.h"
#include "core/aligned_vector.h"
#include "model/presets.h"

namespace sft {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

struct Timer {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream s{eng};
  // Seconds (best of 5 after a warm-up) of C (M, N) (+)= A · B in bf16; A (M, K) plain or given
  // transposed; B plain (K, N), given as (N, K), or packed in the layout the primitive prefers.
  double gemm(int64_t M, int64_t N, int64_t K, bool a_t, char b_form, bool accumulate) {
    const memory::desc a({M, K}, memory::data_type::bf16, a_t ? Tag::ba : Tag::ab);
    const memory::desc b({K, N}, memory::data_type::bf16, b_form == 'p' ? Tag::any : b_form == 't' ? Tag::ba : Tag::ab);
    const memory::desc c({M, N}, memory::data_type::f32, Tag::ab);
    dnnl::primitive_attr attr;
    if (accumulate) {
      dnnl::post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, eng);
    AlignedVector<uint16_t> av(size_t(M * K), 0x3f80);
    AlignedVector<uint8_t> bv(pd.weights_desc().get_size(), 0);
    AlignedVector<float> cv(size_t(M * N));
    const dnnl::matmul mm(pd);
    memory ma(a, eng, av.data()), mb(pd.weights_desc(), eng, bv.data()), mc(c, eng, cv.data());
    double best = 1e30;
    for (int r = 0; r < 6; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      mm.execute(s, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
      s.wait();
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0) best = std::min(best, t);
    }
    return best;
  }
  // A linear layer on N rows: forward x·wᵀ (B packed), dx = dout·w (B packed), dw += doutᵀ·x
  // (A = doutᵀ plain, B = x given as (IC, N)), as CpuBackend runs them on the AMX route.
  double linear(int64_t N, int64_t OC, int64_t IC) {
    const double f = gemm(N, OC, IC, false, 'p', false), d = gemm(N, IC, OC, false, 'p', false),
                 w = gemm(OC, IC, N, false, 't', true);
    if (std::getenv("SFT_CEILING_VERBOSE"))
      std::printf("  N %lld, OC %lld, IC %lld: forward %.2f, dx %.2f, dw %.2f ms\n", (long long)N, (long long)OC,
                  (long long)IC, f * 1e3, d * 1e3, w * 1e3);
    return f + d + w;
  }
};

TEST(GemmBench, DISABLED_StepCeiling) {
  if (!cpu::cpu_features().amx_usable()) GTEST_SKIP() << "the ceiling is measured for the AMX route";
  const char* env = std::getenv("SFT_CEILING_PRESETS");
  std::istringstream names(env ? env : "tiny small base");
  Timer tm;
  for (std::string name; names >> name;) {
    const Preset p = get_preset(name);
    const LlamaConfig& c = p.config;
    const int64_t B = p.batch, T = p.seq_len, N = B * T, C = c.hidden_size, FF = c.intermediate_size;
    const int64_t NH = c.num_attention_heads, HS = c.head_dim, L = c.num_hidden_layers, V = c.vocab_size;
    const double layer = tm.linear(N, c.qkv_dim(), C) + tm.linear(N, C, NH * HS) + tm.linear(N, 2 * FF, C) +
                         tm.linear(N, C, FF);
    double head = 0;
    for (int64_t r0 = 0; r0 < N; r0 += 1024) head += tm.linear(std::min<int64_t>(1024, N - r0), V, C);
    // attention per (row, head): fwd S = Q·Kᵀ (T, T, HS), O = P·V (T, HS, T); bwd recomputes S and
    // forms dV = Pᵀ·dO, dP = dO·Vᵀ, dQ = dS·K, dK = dSᵀ·Q; causal: half of each dense product
    const double qk = tm.gemm(T, T, HS, false, 't', false), pv = tm.gemm(T, HS, T, false, 'a', false);
    const double attn = 0.5 * double(B * NH) * (2 * qk + 2 * pv + 1 * qk + 2 * pv);
    const double gemm_flops =
        6.0 * double(N) * double(L * (c.qkv_dim() * C + C * NH * HS + 2 * FF * C + C * FF) + V * C);
    const double attn_flops = 0.5 * double(B * NH) * 7 * 2.0 * double(T) * double(T) * double(HS);
    const double step = L * (layer + attn) + head;
    // one line per preset, read by bench/ceiling.sh: "ceiling <preset> <seconds> <tokens>"
    std::printf("ceiling %s %.6f %lld | linear GEMMs %.1f ms (%.3f TFLOP, %.2f TFLOP/s), attention %.1f ms (%.3f "
                "TFLOP) | %.0f tok/s from GEMMs and attention alone\n",
                name.c_str(), step, (long long)N, (L * layer + head) * 1e3, gemm_flops * 1e-12,
                gemm_flops * 1e-12 / (L * layer + head), L * attn * 1e3, L * attn_flops * 1e-12, double(N) / step);
    std::fflush(stdout);
  }
}

// Ours on AMX (gemm_amx) against oneDNN on a preset's linear-layer shapes, bf16 operands as the
// CpuBackend's AMX routes hold them (activations bf16, weights packed once): forward x·wᵀ, dx =
// dout·w, and dw += doutᵀ·x, where ours packs doutᵀ straight from dout and x per call (counted)
// and oneDNN is given the transposed copies it runs fastest on (not counted). Milliseconds, best
// of 5. SFT_CEILING_PRESETS as above.
TEST(GemmBench, DISABLED_AmxOursVsOneDnn) {
  if (!cpu::cpu_features().amx_usable()) GTEST_SKIP() << "needs usable AMX";
  const char* env = std::getenv("SFT_CEILING_PRESETS");
  std::istringstream names(env ? env : "base");
  Timer tm;
  auto best_ms = [](auto&& f) {
    double best = 1e30;
    for (int r = 0; r < 6; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      f();
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0) best = std::min(best, t);
    }
    return best * 1e3;
  };
  for (std::string name; names >> name;) {
    const Preset p = get_preset(name);
    const LlamaConfig& c = p.config;
    const int64_t N = std::min<int64_t>(p.batch * p.seq_len, 2048), C = c.hidden_size, FF = c.intermediate_size;
    const int64_t shapes[][2] = {{c.qkv_dim(), C}, {C, c.num_attention_heads * c.head_dim}, {2 * FF, C}, {C, FF},
                                 {c.vocab_size, C}};
    double tot_ours = 0, tot_dnn = 0;
    for (const auto& sh : shapes) {
      const int64_t OC = sh[0], IC = sh[1], Nr = OC == c.vocab_size ? std::min<int64_t>(N, 1024) : N;
      AlignedVector<uint16_t> x(size_t(Nr * IC), 0x3f80), dout(size_t(Nr * OC), 0x3f80);
      AlignedVector<uint16_t> wf(size_t(cpu::BlockedB{IC, OC}.size()), 0x3f80), wd(size_t(cpu::BlockedB{OC, IC}.size()), 0x3f80);
      AlignedVector<uint16_t> xp(size_t(cpu::BlockedB{Nr, IC}.size()));
      AlignedVector<float> out(size_t(Nr * OC)), dx(size_t(Nr * IC)), dw(size_t(OC * IC));
      const cpu::GemmArgs f{.M = Nr, .N = OC, .K = IC, .lda = IC, .C = out.data(), .ldc = OC};
      const cpu::GemmArgs d{.M = Nr, .N = IC, .K = OC, .lda = OC, .C = dx.data(), .ldc = IC};
      const cpu::GemmArgs w{.trans_a = true, .M = OC, .N = IC, .K = Nr, .lda = OC, .C = dw.data(), .ldc = IC,
                            .accumulate = true};
      const double of = best_ms([&] { cpu::gemm_amx(f, x.data(), wf.data()); });
      const double od = best_ms([&] { cpu::gemm_amx(d, dout.data(), wd.data()); });
      const double ow = best_ms([&] {
        cpu::pack_b_bf16(x.data(), Nr, IC, false, xp.data());
        cpu::gemm_amx(w, dout.data(), xp.data());
      });
      // fp32 dout (every layer's but SwiGLU's input gradient): rounded while packed
      AlignedVector<float> dout32(size_t(Nr * OC), 1.0f);
      cpu::GemmArgs d32 = d, w32 = w;
      d32.A = w32.A = dout32.data();
      const double od32 = best_ms([&] { cpu::gemm_amx(d32, nullptr, wd.data()); });
      const double ow32 = best_ms([&] {
        cpu::pack_b_bf16(x.data(), Nr, IC, false, xp.data());
        cpu::gemm_amx(w32, nullptr, xp.data());
      });
      std::printf("  fp32 dout: ours dx %6.2f dw %6.2f ms\n", od32, ow32);
      const double nf = tm.gemm(Nr, OC, IC, false, 'p', false) * 1e3, nd = tm.gemm(Nr, IC, OC, false, 'p', false) * 1e3,
                   nw = tm.gemm(OC, IC, Nr, false, 't', true) * 1e3;
      const double flop = 2.0 * double(Nr) * double(OC) * double(IC) * 1e-9;  // GFLOP per GEMM
      std::printf("N %5lld OC %5lld IC %5lld | ours fwd %6.2f dx %6.2f dw %6.2f ms | oneDNN fwd %6.2f dx %6.2f dw %6.2f ms"
                  " | ours %.2f / oneDNN %.2f TFLOP/s\n",
                  (long long)Nr, (long long)OC, (long long)IC, of, od, ow, nf, nd, nw, 3 * flop / (of + od + ow),
                  3 * flop / (nf + nd + nw));
      const double reps = OC == c.vocab_size ? double(N) / double(Nr) : double(c.num_hidden_layers);
      tot_ours += reps * (of + od + ow), tot_dnn += reps * (nf + nd + nw);
    }
    std::printf("%s: a step's linear GEMMs: ours %.1f ms, oneDNN %.1f ms\n", name.c_str(), tot_ours, tot_dnn);
  }
}

}  // namespace
}  // namespace sft
