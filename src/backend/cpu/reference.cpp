// Reference versions of every CPU kernel (namespace sft::cpu::ref): plain single-threaded loops
// with double accumulation, written to be read against HF LlamaForCausalLM and
// torch.optim.AdamW. The op tests compare the fast kernels of this directory against them. They
// are slow on purpose; attention keeps one query row of scores at a time (O(T) memory).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/gemm.h"
#include "backend/cpu/kernels.h"
#include "core/check.h"
#include "core/dtype.h"

namespace sft::cpu::ref {

// ---- embedding: out (N, C) = wte[tokens] ; dwte (V, C) += scatter(dout) ----
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = wte[int64_t(tokens[n]) * C + c];
}
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) dwte[int64_t(tokens[n]) * C + c] += dout[n * C + c];
}

// ---- RMSNorm: rstd = 1/sqrt(mean(x²) + eps), out = (x * rstd) * w ----
void rms_norm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N,
                      int64_t C, float eps) {
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(x[n * C + c]) * x[n * C + c];
    const float r = float(1.0 / std::sqrt(ss / double(C) + double(eps)));
    rstd[n] = r;
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = (x[n * C + c] * r) * w[c];
  }
}
void residual_rms_norm_forward(float* res, float* out, float* rstd, const float* x, const float* y,
                               const float* w, int64_t N, int64_t C, float eps) {
  for (int64_t i = 0; i < N * C; ++i) res[i] = x[i] + y[i];
  rms_norm_forward(out, rstd, res, w, N, C, eps);
}
// y = x r w with r = (mean(x²)+eps)^-1/2:  dx = r w dy - x r³/C Σ_c(dy w x) ;  dw = Σ_n dy x r
void rms_norm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                       const float* rstd, int64_t N, int64_t C) {
  std::vector<double> dw_acc(size_t(C), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    const double r = rstd[n];
    double dot = 0;
    for (int64_t c = 0; c < C; ++c) dot += double(dout[n * C + c]) * w[c] * x[n * C + c];
    for (int64_t c = 0; c < C; ++c) {
      const double g = dout[n * C + c], xv = x[n * C + c];
      dx[n * C + c] += float(r * w[c] * g - xv * r * r * r * dot / double(C));
      dw_acc[size_t(c)] += g * xv * r;
    }
  }
  for (int64_t c = 0; c < C; ++c) dw[c] += float(dw_acc[size_t(c)]);
}

// ---- RoPE, rotate-half: (a, b) -> (a cos - b sin, b cos + a sin) on q and k heads ----
static void rope_apply(float* qkv, const int32_t* positions, const float* cos, const float* sin,
                       int64_t N, int NH, int NKV, int HS, float sign) {
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
  const int half = HS / 2;
  for (int64_t n = 0; n < N; ++n)
    for (int h = 0; h < NH + NKV; ++h) {
      float* x = qkv + n * QKV + int64_t(h) * HS;
      for (int i = 0; i < half; ++i) {
        const float c = cos[int64_t(positions[n]) * half + i];
        const float s = sign * sin[int64_t(positions[n]) * half + i];
        const float a = x[i], b = x[i + half];
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
      }
    }
}
void rope_forward(float* qkv, const int32_t* positions, const float* cos, const float* sin,
                  int64_t N, int NH, int NKV, int HS) {
  rope_apply(qkv, positions, cos, sin, N, NH, NKV, HS, 1.0f);
}
// The rotation is orthogonal: its transpose (angle -θ) maps dout to din.
void rope_backward(float* dqkv, const int32_t* positions, const float* cos, const float* sin,
                   int64_t N, int NH, int NKV, int HS) {
  rope_apply(dqkv, positions, cos, sin, N, NH, NKV, HS, -1.0f);
}

// ---- attention: per sequence, per head, per query row i: softmax over keys 0..i ----
// Scores of one query row (T) in double; lse = log Σ exp(scaled scores).
static void attention_row(std::vector<double>& p, double& lse, const float* qkv, int64_t QKV,
                          int64_t s0, int64_t i, int h, int kvh, int NH, int HS) {
  const double scale = 1.0 / std::sqrt(double(HS));
  const float* q = qkv + (s0 + i) * QKV + int64_t(h) * HS;
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j <= i; ++j) {
    const float* k = qkv + (s0 + j) * QKV + int64_t(NH + kvh) * HS;
    double dot = 0;
    for (int d = 0; d < HS; ++d) dot += double(q[d]) * k[d];
    p[size_t(j)] = dot * scale;
    m = std::max(m, p[size_t(j)]);
  }
  double sum = 0;
  for (int64_t j = 0; j <= i; ++j) sum += std::exp(p[size_t(j)] - m);
  lse = m + std::log(sum);
  for (int64_t j = 0; j <= i; ++j) p[size_t(j)] = std::exp(p[size_t(j)] - lse);
}

void attention_forward(float* out, float* lse, const float* qkv, const SeqLayout& seqs, int NH,
                       int NKV, int HS) {
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
  std::vector<double> p(size_t(seqs.max_seqlen) + 1), o{};
  o.resize(size_t(HS));
  for (int s = 0; s < seqs.num_seqs; ++s) {
    const int64_t s0 = seqs.cu_seqlens[s], T = seqs.cu_seqlens[s + 1] - s0;
    for (int h = 0; h < NH; ++h) {
      const int kvh = h / (NH / NKV);
      for (int64_t i = 0; i < T; ++i) {
        double l;
        attention_row(p, l, qkv, QKV, s0, i, h, kvh, NH, HS);
        std::fill(o.begin(), o.end(), 0.0);
        for (int64_t j = 0; j <= i; ++j) {
          const float* v = qkv + (s0 + j) * QKV + int64_t(NH + NKV + kvh) * HS;
          for (int d = 0; d < HS; ++d) o[size_t(d)] += p[size_t(j)] * v[d];
        }
        for (int d = 0; d < HS; ++d) out[(s0 + i) * NH * HS + int64_t(h) * HS + d] = float(o[size_t(d)]);
        lse[(s0 + i) * NH + h] = float(l);
      }
    }
  }
}

// Recomputes the softmax from qkv (out and lse are not used): dp_j = dout·v_j,
// ds_j = p_j (dp_j - Σ_k p_k dp_k), dq += scale Σ ds_j k_j, dk_j += scale ds_j q, dv_j += p_j dout.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float*,
                        const float*, const SeqLayout& seqs, int NH, int NKV, int HS) {
  const int64_t QKV = int64_t(NH + 2 * NKV) * HS;
  const int64_t N = seqs.cu_seqlens[seqs.num_seqs];
  const double scale = 1.0 / std::sqrt(double(HS));
  std::vector<double> acc(size_t(N * QKV), 0.0);  // (N, QKV)
  std::vector<double> p(size_t(seqs.max_seqlen) + 1), dp(size_t(seqs.max_seqlen) + 1);
  for (int s = 0; s < seqs.num_seqs; ++s) {
    const int64_t s0 = seqs.cu_seqlens[s], T = seqs.cu_seqlens[s + 1] - s0;
    for (int h = 0; h < NH; ++h) {
      const int kvh = h / (NH / NKV);
      const int64_t qo = int64_t(h) * HS, ko = int64_t(NH + kvh) * HS,
                    vo = int64_t(NH + NKV + kvh) * HS;
      for (int64_t i = 0; i < T; ++i) {
        double l;
        attention_row(p, l, qkv, QKV, s0, i, h, kvh, NH, HS);
        const float* g = dout + (s0 + i) * NH * HS + qo;
        double dsum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double d = 0;
          for (int e = 0; e < HS; ++e) d += double(g[e]) * qkv[(s0 + j) * QKV + vo + e];
          dp[size_t(j)] = d;
          dsum += p[size_t(j)] * d;
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = p[size_t(j)] * (dp[size_t(j)] - dsum) * scale;
          for (int e = 0; e < HS; ++e) {
            acc[size_t((s0 + i) * QKV + qo + e)] += ds * qkv[(s0 + j) * QKV + ko + e];
            acc[size_t((s0 + j) * QKV + ko + e)] += ds * qkv[(s0 + i) * QKV + qo + e];
            acc[size_t((s0 + j) * QKV + vo + e)] += p[size_t(j)] * g[e];
          }
        }
      }
    }
  }
  for (int64_t k = 0; k < N * QKV; ++k) dqkv[k] = float(acc[size_t(k)]);
}

// ---- SwiGLU: gu (N, 2*FF) = [gate | up], out = silu(gate) * up ----
void swiglu_forward(float* out, const float* gu, int64_t N, int64_t FF) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t f = 0; f < FF; ++f) {
      const double g = gu[n * 2 * FF + f], u = gu[n * 2 * FF + FF + f];
      out[n * FF + f] = float(g / (1.0 + std::exp(-g)) * u);
    }
}
void swiglu_backward(float* dgu, const float* dout, const float* gu, int64_t N, int64_t FF) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t f = 0; f < FF; ++f) {
      const double g = gu[n * 2 * FF + f], u = gu[n * 2 * FF + FF + f], d = dout[n * FF + f];
      const double sig = 1.0 / (1.0 + std::exp(-g));
      dgu[n * 2 * FF + f] = float(d * u * sig * (1.0 + g * (1.0 - sig)));
      dgu[n * 2 * FF + FF + f] = float(d * g * sig);
    }
}

// ---- cross-entropy: loss = logsumexp(logits) - logits[target], 0 where target == -100 ----
static void check_targets(const int32_t* targets, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] != -100 && (targets[n] < 0 || targets[n] >= V))
      fail("cross_entropy", "target {} at token {} outside vocab {}", targets[n], n, V);
}
static double row_lse(const float* x, int64_t V) {
  double m = -std::numeric_limits<double>::infinity(), sum = 0;
  for (int64_t v = 0; v < V; ++v) m = std::max(m, double(x[v]));
  for (int64_t v = 0; v < V; ++v) sum += std::exp(double(x[v]) - m);
  return m + std::log(sum);
}
void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N,
                           int64_t V) {
  check_targets(targets, N, V);
  for (int64_t n = 0; n < N; ++n)
    losses[n] = targets[n] == -100 ? 0.0f
                                   : float(row_lse(logits + n * V, V) - logits[n * V + targets[n]]);
}
void cross_entropy_forward_backward(float* losses, float* logits, const int32_t* targets,
                                    int64_t N, int64_t V, float dloss_scale) {
  check_targets(targets, N, V);
  for (int64_t n = 0; n < N; ++n) {
    float* x = logits + n * V;
    if (targets[n] == -100) {
      losses[n] = 0.0f;
      std::fill(x, x + V, 0.0f);
      continue;
    }
    const double lse = row_lse(x, V);
    losses[n] = float(lse - x[targets[n]]);
    for (int64_t v = 0; v < V; ++v)
      x[v] = float((std::exp(double(x[v]) - lse) - (v == targets[n] ? 1.0 : 0.0)) * dloss_scale);
  }
}

// ---- AdamW: torch.optim.AdamW single-tensor path; scalars in double, tensor math in fp32 ----
void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n,
                const AdamWParams& p) {
  const double lr = p.lr, b1 = p.beta1, b2 = p.beta2;
  const float decay = float(1.0 - lr * double(p.weight_decay));
  const double bias_c1 = 1.0 - std::pow(b1, double(p.step));
  const double bias_c2 = 1.0 - std::pow(b2, double(p.step));
  const float neg_step_size = float(-(lr / bias_c1));
  const float bias_c2_sqrt = float(std::sqrt(bias_c2));
  const float b1f = float(b1), b2f = float(b2), one_b1 = float(1.0 - b1), one_b2 = float(1.0 - b2);
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * p.grad_scale;
    param[i] = param[i] * decay;
    m[i] = m[i] * b1f + one_b1 * g;
    v[i] = v[i] * b2f + one_b2 * g * g;
    const float denom = std::sqrt(v[i]) / bias_c2_sqrt + p.eps;
    param[i] = param[i] + neg_step_size * m[i] / denom;
  }
}

// ---- Σ x² in double ----
double sum_squares(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return s;
}

// ---- GEMM (gemm.h): C = [C +] op(A)·op(B) [+ bias], summed in double over (bf16-rounded) operands ----
void gemm(const GemmArgs& g, bool bf16) {
  auto op = [bf16](float x) { return double(bf16 ? bf16_to_f32(f32_to_bf16(x)) : x); };
  for (int64_t m = 0; m < g.M; ++m)
    for (int64_t n = 0; n < g.N; ++n) {
      double s = (g.accumulate ? double(g.C[m * g.ldc + n]) : 0.0) + (g.bias ? double(g.bias[n]) : 0.0);
      for (int64_t k = 0; k < g.K; ++k) {
        const float a = g.trans_a ? g.A[k * g.lda + m] : g.A[m * g.lda + k];
        const float b = g.trans_b ? g.B[n * g.ldb + k] : g.B[k * g.ldb + n];
        s += op(a) * op(b);
      }
      g.C[m * g.ldc + n] = float(s);
    }
}

}  // namespace sft::cpu::ref
