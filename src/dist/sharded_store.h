// ShardedParamStore: FSDP's sharded modes over a Comm. Every unit's flat fp32 parameters are padded
// to a multiple of the world size N and each rank owns one contiguous 1/N block of every unit: its
// fp32 master shard, its gradient shard and the optimizer states (AdamW moments) exist only for
// that block. `full_shard` (ZeRO-3) all-gathers a unit into a gather buffer on acquire (fp32, or
// bf16 within a --bf16 step: set_gather_dtype), prefetching the next unit in pass order, and frees
// it on release; `shard_grad_op` (ZeRO-2) keeps the whole model gathered for the step (fp32) and
// all-gathers the updated shards after the optimizer. Gradients are reduce-scattered in fp32, or in
// bf16 when asked (set_reduce_dtype, --fsdp_reduce_dtype bf16). `hybrid_shard` (`hybrid_shard_zero2`)
// is full_shard (shard_grad_op) among the L ranks of each node, every node a replica: N above is then
// L, and each unit's reduce-scattered gradient block is all-reduced across the nodes (between the
// ranks with the same place in their node) before it is added to the gradient shard.
// `offload` (with full_shard, ShardOptions): the shards (master weights, gradient sums, AdamW
// moments) live in the device backend's host memory (pinned on CUDA) and the host runs the
// optimizer on them (the store's backend() is then a CPU backend over that memory); each unit's
// shard is copied host→device before its all-gather (already rounded to bf16 on the host in a
// bf16 gather) and each reduce-scattered gradient block device→host into the gradient shard. The
// device holds only the units in flight (gather and gradient buffers).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "dist/world.h"
#include "model/param_store.h"

namespace sft {

enum class ShardMode { full_shard, shard_grad_op, hybrid_shard, hybrid_shard_zero2 };
const char* shard_mode_name(ShardMode m);
// What the mode does within one node: full_shard (also hybrid_shard) or shard_grad_op.
ShardMode within_node(ShardMode m);
bool is_hybrid(ShardMode m);

struct ShardOptions {
  // full_shard only: this rank's shards in host memory, the AdamW update on the host (see above).
  // A world of one is allowed (one device training a model larger than its memory). With the CPU
  // backend as the device every copy and every host step runs all the same (the tests' way).
  bool offload = false;
};

namespace detail {
struct OffloadHost {  // constructed before the ParamStore base, which allocates from it
  std::unique_ptr<Backend> host;
};
}  // namespace detail

class ShardedParamStore final : private detail::OffloadHost, public ParamStore {
 public:
  // comm is the world; a hybrid mode splits it into nodes (split_by_node: every rank constructs its
  // store at the same point). A world of one node makes hybrid_shard full_shard (rank 0 says so).
  // backend is the device the model computes on; under offload backend() is the host's.
  ShardedParamStore(const LlamaConfig& cfg, Backend& backend, Comm& comm, ShardMode mode, ShardOptions opt = {});
  ~ShardedParamStore() override;

  void acquire(int unit) override;
  void release(int unit) override;
  void written(int unit) override;
  // Reduce-scatters (sums) the unit's full gradient into this rank's gradient shard (added to what
  // earlier micro-batches left there). Asynchronous: it completes while the next unit computes,
  // and every reduce-scatter of a pass is complete when the embedding's (the last) returns.
  void grads_ready(int unit) override;
  Tensor local_params() const override { return shard_; }
  Tensor local_grads() const override { return grad_shard_; }
  const std::vector<LocalSlice>& local_slices() const override { return slices_; }
  void params_updated() override;
  // Σ g² over this rank's gradient shard; 0 outside the first node under hybrid modes (every node
  // holds the same shards), so that the sum over the world is the norm's square once.
  double grad_sum_squares() override;

  // The dtype full_shard all-gathers units in from now on: f32, or bf16 (the GEMM dtype under
  // --bf16; train_step sets it for the step's passes, dist/step_collectives.h, and puts f32 back). In
  // bf16 the decoder layers and the untied head move as bf16 (each rank rounds its shard once per
  // optimizer step): their matrices are bf16 views of the gather buffer (the backend's linear
  // layers take them as they are, bit-equal to rounding the fp32 weight) and their norm weights and
  // biases fp32 views of a whole-model copy refreshed once per step (one all-reduce of those few
  // values), so RMSNorm and the biases stay exact; the embedding (a lookup, and with tied embeddings
  // also the LM head) and the tied head's final norm stay fp32. param_table() views of a unit
  // gathered in bf16 are null, and written() on one is an error: loading, initialising and rank 0's
  // checkpoint reads gather fp32 (root access always does). shard_grad_op ignores it (fp32).
  void set_gather_dtype(DType dt);
  DType gather_dtype() const { return gather_dtype_; }
  // The dtype gradients are reduce-scattered in: f32 (one process's math up to summation order) or
  // bf16 (HF Trainer's bf16 reduce: each unit's gradient rounded to bf16, summed over the ranks in
  // bf16, then widened and added to the fp32 gradient shard).
  void set_reduce_dtype(DType dt);
  DType reduce_dtype() const { return reduce_dtype_; }
  // Bytes this rank received or sent in weight all-gathers (its output buffers' sizes, summed):
  // tests check that a bf16 gather moves half the bytes.
  int64_t gathered_bytes() const { return gathered_bytes_; }

  ShardMode mode() const { return requested_; }
  Comm& comm() const { return comm_; }  // the ranks that shard the model: the world, or this node
  Comm* across() const { return nodes_.across.get(); }  // hybrid: one rank per node; else null
  // Whether this rank's replica is the one checkpoints read (hybrid: the node of world rank 0;
  // the other nodes hold the same values and take no part in rank 0's reads). Always true else.
  bool first_replica() const { return nodes_.first; }
  int64_t shard_len(int unit) const { return shard_len_[size_t(unit)]; }      // elements per rank
  int64_t shard_offset(int unit) const { return shard_off_[size_t(unit)]; }  // in local_params()
  // Gathered units held now and at most since the last reset (full_shard: gather buffers in use,
  // acquired or prefetched; shard_grad_op: 0, the model is always whole).
  int resident_units() const;
  int peak_resident_units() const { return peak_resident_; }
  void reset_peak_resident() { peak_resident_ = resident_units(); }
  // Bytes this rank keeps between steps: shards of parameters, gradients and every state.
  int64_t persistent_bytes() const;
  bool offload() const { return host != nullptr; }
  // Bytes of the device backend's memory this store holds now: the gather and gradient buffers
  // allocated (and their staging), the fp32 norm copies of bf16 gathers, and, without offload,
  // the persistent shards too. Under offload only the first ones: the units in flight.
  int64_t device_bytes() const;

  // ---- rank 0 reads the full model (checkpoints) while the other ranks serve it ----
  // Every rank calls begin_root_access; then rank 0 acquires and releases units as it likes (each
  // gather it needs is announced to the others) and calls end_root_access, while every other rank
  // calls serve_root, which takes part in those gathers (one unit buffer at a time) and returns at
  // rank 0's end_root_access. No prefetch meanwhile.
  void begin_root_access();
  void end_root_access();
  void serve_root();

 private:
  struct Slot {  // a gather buffer (full_shard) holding one unit, gathered or on its way
    Tensor buf;  // (max padded unit) fp32, or its first half as bf16 (a unit gathered in bf16)
    DType dtype = DType::f32;  // what the unit in it was gathered in
    int unit = -1;
    bool pending = false;
    bool by_comm = false;  // req is a collective (else a copy alone: offload in a world of one)
    CommRequest req;
    Tensor in;  // offload, N > 1: (max shard) this rank's block copied to the device, the gather's input
  };
  struct GradBuf {  // one unit's full gradient while its backward runs, then its reduce-scatter
    Tensor buf;     // (max padded unit) fp32
    Tensor out;     // (max shard) this rank's block of the sum (fp32, or bf16 in its first half)
    Tensor buf16;   // (max padded unit) bf16: buf rounded, the input of a bf16 reduce-scatter
    int unit = -1;  // bound to the unit's grads() views
    int rs_unit = -1;  // the unit whose reduce-scatter is in flight from buf into out, or -1
    DType rs_dtype = DType::f32;  // that reduce-scatter's dtype
    CommRequest req;
  };

  Tensor block(Tensor flat, int64_t offset, int64_t n) const;
  void* dev_alloc(int64_t bytes);  // device memory of the buffers in flight, counted in device_bytes_
  void dev_free(Tensor& t);
  Tensor shard_of(Tensor local, int unit) const { return block(local, shard_off_[size_t(unit)], shard_len_[size_t(unit)]); }
  Tensor padded_unit(float* base, int unit) const { return Tensor(base, DType::f32, {padded_[size_t(unit)]}, dev_.device()); }
  float* unit_memory(int unit) const;  // where the unit's gathered values are (acquired units)
  void bind(Weights& views, int unit, float* base);
  void bind16(int unit, uint16_t* base);  // weights() of a unit gathered in bf16 (set_gather_dtype)
  bool gathers_bf16(int unit) const;      // the unit goes as bf16 in a bf16 gather
  void refresh_bf16_copies();             // shard16_ and exact_ from the master shard
  int gather(int unit);  // issues the unit's all-gather into a free slot; returns the slot
  void wait_slot(Slot& s);
  void prefetch_after(int unit);
  int take_grad_buf(int unit);
  void finish_reduce(GradBuf& g);
  void finish_all_reduces();
  void announce(double code);
  void count_resident();

  Backend& dev_;     // where units are gathered and computed (be_, the shards' backend, unless offload)
  NodeComms nodes_;  // hybrid: this node's Comm and the across-nodes Comm (else empty)
  Comm& comm_;       // the world, or this node (hybrid)
  const ShardMode requested_;
  const ShardMode mode_;  // within the node: full_shard or shard_grad_op
  const int rank_, world_;
  // Buffers kept allocated (gather slots, gradient buffers): the current unit and the next one,
  // + the embedding that tied embeddings hold from the lookup to its backward.
  const int keep_;
  std::vector<int64_t> shard_len_, shard_off_, padded_;  // (units)
  int64_t max_padded_ = 0, max_shard_ = 0;
  Tensor shard_, grad_shard_;  // (Σ shard_len) master parameters and gradient sums of this rank
  Tensor full_;                // (Σ padded) shard_grad_op: the whole model, units padded
  std::vector<LocalSlice> slices_;
  std::vector<int> refs_, slot_of_, grad_of_;  // (units) acquire count, slot, grad buffer or -1
  std::vector<Slot> slots_;
  std::vector<GradBuf> grad_bufs_;
  std::vector<std::string> gather_names_, reduce_names_;  // (units) what the collectives log
  bool backward_ = false;     // between the head's grads_ready and the embedding's
  bool root_access_ = false;  // rank 0 reads the model; gathers are announced, no prefetch
  int peak_resident_ = 0;
  DType gather_dtype_ = DType::f32, reduce_dtype_ = DType::f32;
  // bf16 gathers (allocated on the first one): this rank's master shard rounded to bf16, and every
  // bf16-gathered unit's norm weights and biases in fp32, whole; both stale after each update.
  Tensor shard16_;  // (Σ shard_len) bf16
  Tensor exact_;    // (Σ exact sizes) fp32
  struct ExactRange {
    int unit = 0;
    int64_t at = 0;  // first element within the unit
    int64_t n = 0;
    int64_t off = 0;  // in exact_
  };
  std::vector<ExactRange> exact_ranges_;
  bool copies_stale_ = true;
  int64_t gathered_bytes_ = 0;
  int64_t device_bytes_ = 0;  // dev_alloc'ed and not freed
  Tensor grad_host_;          // offload: (max shard) fp32 host staging of a reduced gradient block
  int64_t reduce_seq_ = 0;    // reduce-scatters issued, to finish the oldest first
  std::vector<int64_t> reduce_issued_;  // (grad bufs) the sequence number of the one in flight
};

}  // namespace sft
