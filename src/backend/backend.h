// The Backend interface: memory, GEMMs and the op table (forward + backward per op) that the model
// calls. The CPU backend (backend/cpu/) implements it with oneDNN + OpenMP/AVX-512 kernels, the
// CUDA backend (backend/cuda/) with cuBLASLt + CUDA kernels. Model code never sees which backend
// runs; it reads and writes backend memory from the host only through copy() (host_access.h).
//
// Dimension letters used in every shape comment in the project:
//   B batch rows, T tokens per row, N = B*T flattened tokens, C model dim, V vocab,
//   L layers, NH query heads, NKV key/value heads, HS head dim, FF MLP hidden dim,
//   QKV = (NH + 2*NKV) * HS fused projection width, S packed sequences in a batch, P positions.
// Conventions: activation gradients are written (=) unless a method says it accumulates (+=);
// parameter gradients always accumulate (+=), so micro-batches sum into one gradient buffer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace sft {

// Variable-length sequences packed into the N flattened tokens of a batch: sequence s occupies
// tokens [cu_seqlens[s], cu_seqlens[s+1]). Attention is causal within a sequence and never
// crosses a boundary. Host memory (a GPU backend copies it to the device itself).
struct SeqLayout {
  const int32_t* cu_seqlens = nullptr;  // (S + 1), cu_seqlens[0] = 0, cu_seqlens[S] = N
  int num_seqs = 0;                     // S
  int max_seqlen = 0;                   // longest sequence, for tiling
};

struct AdamWParams {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1-based step count after increment, for bias correction (as torch)
  // g = grad · grad_scale inside the update (global-norm clipping's factor, the same fp32 product
  // torch's clip_grad_norm_ writes into .grad): saves a pass over the gradients; grad is not written.
  float grad_scale = 1.0f;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;

  // ---- memory ----
  virtual void* alloc(size_t bytes) = 0;  // zero-filled, 64-byte aligned
  virtual void dealloc(void* ptr) = 0;
  // Any direction between host memory and this backend's memory; complete on return when either
  // side is host memory.
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(Tensor t) = 0;
  // Host memory this backend copies to and from fastest, for state kept off the device (--fsdp
  // offload): page-locked (pinned) on CUDA, plain memory on a host backend. Zero-filled, 64-byte
  // aligned; freed with free_host (backend.cpp has the plain defaults).
  virtual void* alloc_host(size_t bytes);
  virtual void free_host(void* ptr);
  // dst = src as copy(), but ordered on this backend's stream without waiting on the host (CUDA:
  // from pinned memory, cudaMemcpyAsync): a host source must stay unchanged until synchronize() or
  // a later copy() involving host memory. Host backends: copy().
  virtual void copy_async(void* dst, const void* src, size_t bytes) { copy(dst, src, bytes); }

  // ---- device control and facts (the defaults suit a synchronous host backend) ----
  // Ops may run asynchronously; this waits for all of them (for timing).
  virtual void synchronize() {}
  // "cpu", or the GPU's name, compute capability and memory, for reports.
  virtual std::string device_description() const { return name(); }
  // High-water mark of device memory this backend held (allocations and its own scratch),
  // 0 when not tracked (the CPU backend: see the process's peak RSS instead).
  virtual size_t peak_memory_bytes() const { return 0; }
  // Starts the high-water mark again from the memory held now (e.g. after initialisation).
  virtual void reset_peak_memory() {}
  // TF32 tensor-core math for fp32 GEMMs (--tf32 True); no effect where there is none.
  virtual void set_tf32(bool) {}
  // Which implementation runs each GEMM family (bf16, fp32) on this backend and why, one line
  // each, for sft bench and the start of sft train; "" where there is nothing to say.
  virtual std::string route_report() const { return ""; }

  // GEMM operand precision: f32, or bf16 (operands rounded to bf16, fp32 accumulation and
  // fp32 outputs). Weights stay fp32 in memory either way (master copy).
  virtual void set_matmul_dtype(DType dt) = 0;
  virtual DType matmul_dtype() const = 0;
  // Start of a forward or forward-backward pass. Within a pass weights do not change, so the
  // backend may keep derived copies of weight operands (their bf16 rounding). The CPU backend
  // drops them here; the CUDA backend keeps them across passes and instead marks a copy stale
  // whenever it writes the fp32 weight itself (copy, fill_zero, scale; adamw_step refreshes it).
  virtual void begin_pass() = 0;
  // Bytes per parameter that bf16 matmuls keep beside the fp32 master as derived weight copies
  // (0: none): 2 for one bf16 copy (CUDA), 4 for the CPU's AMX / oneDNN route, which keeps each
  // weight packed in the two layouts of its forward and dx GEMMs. The memory plan of sft train
  // counts it.
  virtual int bf16_weight_copy_bytes() const = 0;
  // Whether the bf16 GEMM operands may be stored in bf16 by the ops that produce them (rms_norm
  // and residual_rms_norm out, swiglu out and dgu) and passed to linear_forward / linear_backward
  // as x or dout: bit-identical to fp32 storage (the GEMM rounds them to bf16 anyway, and those
  // tensors feed nothing else), half the memory traffic. Only under the bf16 matmul dtype.
  virtual bool bf16_activations() const { return false; }
  // Derived copies of weights (bf16 roundings, packed layouts) are keyed by the weight's address.
  // The parameter store (model/param_store.h) calls this for a unit's memory whenever it may hold
  // new values that did not come through this backend's own ops: after every optimizer update,
  // after loading or initialising weights, and on every acquire of a unit into a gather buffer
  // (one buffer holds layer after layer under sharding). Every copy derived from memory that
  // overlaps [ptr, ptr + bytes) is dropped; the next GEMM that reads the weight derives it anew.
  virtual void invalidate_weight_copies(const void* ptr, size_t bytes) = 0;

  // ---- ordering with communication (dist/) ----
  // The backend's native stream (cudaStream_t on CUDA), nullptr for a synchronous host backend.
  // A communicator issues its collectives on it (or waits on an event of it) so communication is
  // ordered with compute without device-wide synchronisation.
  virtual void* native_stream() { return nullptr; }
  // An event marking every op issued so far (an opaque handle the caller frees with
  // destroy_event), and making this backend's later ops wait for an event recorded elsewhere
  // (e.g. by a communicator on its own stream). Host backends complete every op on return: no-ops.
  virtual void* record_event() { return nullptr; }
  virtual void wait_event(void* /*event*/) {}
  virtual void destroy_event(void* /*event*/) {}

  // ---- linear: out (N, OC) (=, or += when accumulate) x (N, IC) · w (OC, IC)ᵀ + bias (OC) ----
  // w is fp32 (the master weight; rounded to bf16 when the matmul dtype is bf16) or bf16 (a
  // gathered bf16 unit under sharding: used as it is, bit-equal to passing the fp32 weight that
  // rounds to it). x, out, dout, dx, dw, bias, dbias are fp32.
  virtual void linear_forward(Tensor out, Tensor x, Tensor w, Tensor bias, bool accumulate) = 0;
  // dx (N, IC) = dout · w   (+= when accumulate_dx; dx may be empty to skip it)
  // dw (OC, IC) += doutᵀ · x ; dbias (OC) += Σ_n dout (dbias may be empty)
  virtual void linear_backward(Tensor dx, Tensor dw, Tensor dbias, Tensor dout, Tensor x, Tensor w,
                               bool accumulate_dx) = 0;

  // ---- embedding: out (N, C) = wte[tokens] ; dwte (V, C) += scatter(dout) ----
  virtual void embedding_forward(Tensor out, const int32_t* tokens, Tensor wte) = 0;
  virtual void embedding_backward(Tensor dwte, Tensor dout, const int32_t* tokens) = 0;

  // ---- RMSNorm (HF LlamaRMSNorm, fp32): out (N, C) = x * rstd * w, rstd (N) saved ----
  virtual void rms_norm_forward(Tensor out, Tensor rstd, Tensor x, Tensor w, float eps) = 0;
  // Fused with the residual add before it: res (N, C) = x + y, then out (N, C) and rstd (N) as
  // rms_norm_forward(out, rstd, res, w, eps), bit-identical to that unfused pair on one backend.
  // res may be the same buffer as x or y.
  virtual void residual_rms_norm_forward(Tensor res, Tensor out, Tensor rstd, Tensor x, Tensor y, Tensor w,
                                         float eps) = 0;
  // dx (N, C) += (accumulates: it feeds the residual stream); dw (C) +=
  virtual void rms_norm_backward(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w,
                                 Tensor rstd) = 0;

  // ---- RoPE, rotate-half (HF apply_rotary_pos_emb), in place on the first NH + NKV heads of
  // qkv (N, QKV) (the q and k parts). cos, sin (P, HS/2) indexed by positions (N).
  // backward applies the inverse rotation in place to dqkv. ----
  virtual void rope_forward(Tensor qkv, const int32_t* positions, Tensor cos, Tensor sin, int NH,
                            int NKV, int HS) = 0;
  virtual void rope_backward(Tensor dqkv, const int32_t* positions, Tensor cos, Tensor sin, int NH,
                             int NKV, int HS) = 0;

  // ---- attention: causal, GQA, variable-length, tiled online softmax (FlashAttention);
  // never materialises a T×T matrix. qkv (N, QKV) holds q | k | v per token (after RoPE).
  // out (N, NH*HS) ; lse (N, NH) = logsumexp of scaled scores per query, saved for backward.
  // scale = 1/sqrt(HS). ----
  virtual void attention_forward(Tensor out, Tensor lse, Tensor qkv, const SeqLayout& seqs, int NH,
                                 int NKV, int HS) = 0;
  // dqkv (N, QKV) = (written, all three parts)
  virtual void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                  const SeqLayout& seqs, int NH, int NKV, int HS) = 0;

  // ---- attention for generation with a KV cache: qkv_cache (P, QKV) holds q | k | v of every
  // position so far (after RoPE); the queries are rows [start, start + n), each attending
  // causally to rows [0, its own index]. out (n, NH*HS). ----
  virtual void attention_forward_cached(Tensor out, Tensor qkv_cache, int64_t start, int64_t n, int NH,
                                        int NKV, int HS) = 0;

  // ---- SwiGLU: gu (N, 2*FF) = [gate | up] ; out (N, FF) = silu(gate) * up ----
  virtual void swiglu_forward(Tensor out, Tensor gu) = 0;
  // dgu (N, 2*FF) = (written)
  virtual void swiglu_backward(Tensor dgu, Tensor dout, Tensor gu) = 0;

  // ---- cross-entropy in fp32 over logits (N, V) with targets (N); target -100 = ignored ----
  // losses (N) = -log softmax(logits)[target] (0 where ignored)
  virtual void cross_entropy_forward(Tensor losses, Tensor logits, const int32_t* targets) = 0;
  // Fused forward + backward: writes losses (N) and overwrites logits in place with
  // dlogits = (softmax - onehot(target)) * dloss_scale (zero rows where ignored).
  virtual void cross_entropy_forward_backward(Tensor losses, Tensor logits, const int32_t* targets,
                                              float dloss_scale) = 0;
  // The same with dlogits written to dlogits16 (N, V) in bf16 (rounded as f32_to_bf16, so the
  // LM head's backward GEMMs get the operand they would round to anyway, at half the bytes), the
  // logits left as they were. Only where bf16_activations(); other backends fail.
  virtual void cross_entropy_forward_backward_bf16(Tensor losses, Tensor logits, const int32_t* targets,
                                                   float dloss_scale, Tensor dlogits16) = 0;

  // ---- optimizer and reductions over flat fp32 buffers ----
  // AdamW as torch.optim.AdamW: decoupled decay param *= 1 - lr*wd, then the Adam update.
  virtual void adamw_step(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) = 0;
  virtual double sum_squares(Tensor x) = 0;   // Σ x², accumulated in double
  virtual void scale(Tensor x, float s) = 0;  // x *= s
};

// "cpu" (always built) or "cuda" (a clear error when this build has no CUDA backend or no usable
// GPU is present).
std::unique_ptr<Backend> create_backend(const std::string& name);
// A data-parallel rank's backend: "cuda" takes the GPU of the node-local rank (create.h), "cpu"
// is the same for every rank.
std::unique_ptr<Backend> create_backend(const std::string& name, int local_rank);
// The CPU backend over `device`'s host memory (alloc/dealloc are device.alloc_host/free_host:
// pinned on CUDA): runs the host side of --fsdp offload (the AdamW update, gradient sums) on
// buffers the device copies to and from at full speed. `device` must outlive it.
std::unique_ptr<Backend> create_host_backend(Backend& device);
// "" when create_backend("cuda") can work here, else the reason (no CUDA backend in this build,
// no GPU, driver too old, compute capability below 8.0). Tests skip GPU checks on it.
std::string cuda_unavailable_reason();

// Dense peak GFLOP/s used for MFU by default (design.md §9): the peak of the instruction the GEMMs
// of that dtype actually run on (the CPU's GEMM route, backend/cpu/gemm_route.h): AMX tdpbf16ps,
// vdpbf16ps or fp32 FMA, measured once per process on the OpenMP threads of the first call
// (register/tile-only loops, best of 10), on CPUs without AVX-512 780 bf16 / 420 fp32 (assumed,
// the project's 2-core machines); on CUDA the H100/H200 SXM dense peaks (989 TFLOP/s bf16, 494.5
// TF32, 67 fp32). `how` says which instruction and how the figure was obtained, for reports.
struct PeakInfo {
  double gflops = 0;
  std::string how;
};
PeakInfo default_peak(Device device, DType matmul_dtype, bool tf32);
double default_peak_gflops(Device device, DType matmul_dtype, bool tf32);  // default_peak().gflops

}  // namespace sft
