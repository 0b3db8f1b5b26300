// ShardedParamStore (see sharded_store.h): shard layout, gather buffers with prefetch in pass
// order, per-unit gradient buffers reduce-scattered into the gradient shard (rank 0's access to
// the full model for checkpoints is in sharded_checkpoint.cpp). Views of a unit (weights(), grads(), param_table()) point
// into its gather buffer (full_shard) or the whole-model buffer (shard_grad_op) while it is
// acquired, and are null otherwise.
#include "dist/sharded_store.h"

#include <algorithm>
#include <cstdio>
#include <optional>

#include "backend/host_access.h"
#include "core/dtype.h"

namespace sft {

namespace {


// A layout over an address that need not be memory: only the views of units that land on real
// memory are used (a unit placed at a buffer b is laid out from b minus the unit's flat offset).
float* shifted(float* base, int64_t elements) {
  return reinterpret_cast<float*>(reinterpret_cast<uintptr_t>(base) - uintptr_t(elements) * sizeof(float));
}

float* stand_in_base() { return reinterpret_cast<float*>(uintptr_t(1) << 20); }

// dst (n) = src (n) rounded to bf16 (core/dtype.h's rounding, the backend's), in chunks over the threads.
void round_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  constexpr int64_t kChunk = int64_t(1) << 16;
#pragma omp parallel for schedule(static) if (n > 4 * kChunk)
  for (int64_t i = 0; i < n; i += kChunk) convert_f32_to_bf16(src + i, dst + i, size_t(std::min(kChunk, n - i)));
}

Tensor as_bf16(void* data, int64_t n, Device dev) { return Tensor(data, DType::bf16, {n}, dev); }

}  // namespace

const char* shard_mode_name(ShardMode m) {
  switch (m) {
    case ShardMode::full_shard: return "full_shard";
    case ShardMode::shard_grad_op: return "shard_grad_op";
    case ShardMode::hybrid_shard: return "hybrid_shard";
    case ShardMode::hybrid_shard_zero2: return "hybrid_shard_zero2";
  }
  return "?";
}

ShardMode within_node(ShardMode m) {
  return m == ShardMode::shard_grad_op || m == ShardMode::hybrid_shard_zero2 ? ShardMode::shard_grad_op
                                                                              : ShardMode::full_shard;
}

bool is_hybrid(ShardMode m) { return m == ShardMode::hybrid_shard || m == ShardMode::hybrid_shard_zero2; }

namespace {

// hybrid modes: the node split; one node has no one to replicate with (its across Comm is dropped).
NodeComms hybrid_groups(Comm& world, ShardMode mode) {
  if (!is_hybrid(mode)) return {};
  NodeComms g = split_by_node(world);
  if (g.across->size() == 1) {
    if (world.rank() == 0)
      std::printf("note: --fsdp %s on one node (%d ranks): nothing to replicate across nodes, the same as %s\n",
                  shard_mode_name(mode), world.size(), shard_mode_name(within_node(mode)));
    g.across.reset();
  } else if (world.rank() == 0) {
    std::printf("%s: %d nodes of %d ranks; the model sharded 1/%d within each node, every node a replica\n",
                shard_mode_name(mode), g.across->size(), g.node->size(), g.node->size());
  }
  return g;
}

}  // namespace

namespace {

std::unique_ptr<Backend> offload_host(Backend& device, ShardMode mode, const ShardOptions& opt) {
  if (!opt.offload) return nullptr;
  SFT_CHECK(mode == ShardMode::full_shard, "sharded_store", "offload with {}: it works with full_shard only",
            shard_mode_name(mode));
  return create_host_backend(device);
}

}  // namespace

ShardedParamStore::ShardedParamStore(const LlamaConfig& cfg, Backend& backend, Comm& comm, ShardMode mode,
                                     ShardOptions opt)
    : OffloadHost{offload_host(backend, mode, opt)}, ParamStore(cfg, host ? *host : backend), dev_(backend),
      nodes_(hybrid_groups(comm, mode)), comm_(nodes_.node ? *nodes_.node : comm),
      requested_(mode), mode_(within_node(mode)), rank_(comm_.rank()), world_(comm_.size()),
      keep_(cfg.tie_word_embeddings ? 3 : 2) {
  const int U = num_units();
  int64_t local = 0, padded_total = 0;
  for (int u = 0; u < U; ++u) {
    const ParamUnit& pu = units_[size_t(u)];
    const int64_t len = (pu.size + world_ - 1) / world_;
    shard_len_.push_back(len);
    shard_off_.push_back(local);
    padded_.push_back(len * world_);
    max_padded_ = std::max(max_padded_, len * world_);
    max_shard_ = std::max(max_shard_, len);
    // This rank's block [rank·len, (rank+1)·len) of the padded unit; the part before the unit's end.
    const int64_t lo = std::min(pu.size, rank_ * len), hi = std::min(pu.size, lo + len);
    if (hi > lo) slices_.push_back({u, pu.offset + lo, local, hi - lo});
    local += len;
    padded_total += len * world_;
    gather_names_.push_back("weights " + pu.name);
    reduce_names_.push_back("grads " + pu.name);
  }
  shard_ = alloc_f32(local);
  grad_shard_ = alloc_f32(local);
  // Offsets and units of the HF table from a layout over a stand-in base (no memory behind it).
  float* const stand_in = stand_in_base();
  Weights layout;
  lay_out_weights(cfg_, stand_in, layout, be_.device(), nullptr);
  index_table(layout, stand_in);
  // The norm weights and biases of the units a bf16 gather moves as bf16: kept exact in exact_.
  int64_t exact_total = 0;
  auto keep_exact = [&](int unit, const Tensor& t) {
    if (t.empty()) return;
    const int64_t at = static_cast<const float*>(t.data) - stand_in - units_[size_t(unit)].offset;
    exact_ranges_.push_back({unit, at, t.numel(), exact_total});
    exact_total += t.numel();
  };
  for (int u = 0; u < U; ++u) {
    if (!gathers_bf16(u)) continue;
    if (u == unit_head()) {
      keep_exact(u, layout.final_norm);
      continue;
    }
    const LayerWeights& lw = layout.layers[size_t(u - 1)];
    for (const Tensor* t : {&lw.attn_norm, &lw.bqkv, &lw.bo, &lw.mlp_norm}) keep_exact(u, *t);
  }
  lay_out_weights(cfg_, nullptr, w_, dev_.device(), nullptr);
  lay_out_weights(cfg_, nullptr, g_, dev_.device(), nullptr);
  if (host) grad_host_ = alloc_f32(max_shard_);
  for (ParamRef& p : table_) p.view.data = nullptr;
  refs_.assign(size_t(U), 0);
  slot_of_.assign(size_t(U), -1);
  grad_of_.assign(size_t(U), -1);
  if (mode_ == ShardMode::shard_grad_op) {
    full_ = alloc_f32(padded_total);
    int64_t off = 0;
    for (int u = 0; u < U; ++u) {
      bind(w_, u, full_.f32() + off);
      off += padded_[size_t(u)];
    }
  }
}

ShardedParamStore::~ShardedParamStore() {
  for (Slot& s : slots_) {
    if (s.pending && s.by_comm) comm_.wait(s.req);
    dev_free(s.buf);
    dev_free(s.in);
  }
  for (GradBuf& g : grad_bufs_) {
    if (g.rs_unit >= 0) comm_.wait(g.req);
    for (Tensor* t : {&g.buf, &g.out, &g.buf16}) dev_free(*t);
  }
  dev_free(exact_);
}

void* ShardedParamStore::dev_alloc(int64_t bytes) {
  device_bytes_ += bytes;
  return dev_.alloc(size_t(bytes));
}

void ShardedParamStore::dev_free(Tensor& t) {
  if (!t.data) return;
  device_bytes_ -= int64_t(t.nbytes());
  dev_.dealloc(t.data);
  t = Tensor();
}

int64_t ShardedParamStore::device_bytes() const {
  return device_bytes_ + (offload() ? 0 : persistent_bytes() - (exact_.data ? int64_t(exact_.nbytes()) : 0));
}

Tensor ShardedParamStore::block(Tensor flat, int64_t offset, int64_t n) const {
  SFT_CHECK(offset >= 0 && offset + n <= flat.numel(), "sharded_store", "block [{}, {}) outside a buffer of {}",
            offset, offset + n, flat.numel());
  return Tensor(flat.f32() + offset, DType::f32, {n}, flat.device);
}

float* ShardedParamStore::unit_memory(int unit) const {
  if (mode_ == ShardMode::shard_grad_op) {
    int64_t off = 0;
    for (int u = 0; u < unit; ++u) off += padded_[size_t(u)];
    return full_.f32() + off;
  }
  const int s = slot_of_[size_t(unit)];
  SFT_CHECK(s >= 0, "sharded_store", "unit {} ({}) is not gathered", unit, units_[size_t(unit)].name);
  return slots_[size_t(s)].buf.f32();
}

// Points views' tensors of one unit (and, for weights, its param_table entries) at base (the
// unit's first element), or at nothing when base is null.
void ShardedParamStore::bind(Weights& views, int unit, float* base) {
  const ParamUnit& pu = units_[size_t(unit)];
  Weights at;
  lay_out_weights(cfg_, base ? shifted(base, pu.offset) : nullptr, at, dev_.device(), nullptr);
  const bool tied = cfg_.tie_word_embeddings;
  if (unit == unit_embed()) {
    views.embed = at.embed;
    if (tied) views.lm_head = at.embed;
  } else if (unit == unit_head()) {
    views.final_norm = at.final_norm;
    if (!tied) views.lm_head = at.lm_head;
  } else {
    views.layers[size_t(unit - 1)] = at.layers[size_t(unit - 1)];
  }
  if (&views != &w_) return;
  for (ParamRef& p : table_)
    if (p.unit == unit) p.view.data = base ? base + (p.offset - pu.offset) : nullptr;
}

bool ShardedParamStore::gathers_bf16(int unit) const {
  // Not the embedding (a lookup; tied, also the LM head) nor a tied head (only the final norm).
  return unit != unit_embed() && (unit != unit_head() || !cfg_.tie_word_embeddings);
}

// A unit gathered in bf16 at base: its matrices bf16 views of the buffer (the same element
// offsets as the fp32 layout), its norm weights and biases fp32 views of exact_. No fp32 values of
// the unit exist meanwhile: its param_table() views are null.
void ShardedParamStore::bind16(int unit, uint16_t* base) {
  float* const stand_in = stand_in_base();
  Weights at;
  lay_out_weights(cfg_, shifted(stand_in, units_[size_t(unit)].offset), at, dev_.device(), nullptr);
  auto view = [&](Tensor t) {
    if (t.empty()) return t;
    const int64_t e = static_cast<const float*>(t.data) - stand_in;  // element within the unit
    if (t.ndim == 2) {
      t.data = base + e;
      t.dtype = DType::bf16;
      return t;
    }
    for (const ExactRange& r : exact_ranges_)
      if (r.unit == unit && r.at == e) {
        t.data = exact_.f32() + r.off;
        return t;
      }
    fail("sharded_store", "unit {} ({}): no fp32 copy of its 1-D tensor at element {}", unit,
         units_[size_t(unit)].name, e);
  };
  if (unit == unit_head()) {
    w_.final_norm = view(at.final_norm);
    w_.lm_head = view(at.lm_head);
  } else {
    const LayerWeights& src = at.layers[size_t(unit - 1)];
    LayerWeights& dst = w_.layers[size_t(unit - 1)];
    dst = {view(src.attn_norm), view(src.wqkv), view(src.bqkv), view(src.wo),
           view(src.bo),        view(src.mlp_norm), view(src.wgu), view(src.wdown)};
  }
  for (ParamRef& p : table_)
    if (p.unit == unit) p.view.data = nullptr;
}

void ShardedParamStore::set_gather_dtype(DType dt) {
  SFT_CHECK(dt == DType::f32 || dt == DType::bf16, "sharded_store", "gather dtype {}, expected f32 or bf16",
            dtype_name(dt));
  gather_dtype_ = dt;
}

void ShardedParamStore::set_reduce_dtype(DType dt) {
  SFT_CHECK(dt == DType::f32 || dt == DType::bf16, "sharded_store", "reduce dtype {}, expected f32 or bf16",
            dtype_name(dt));
  reduce_dtype_ = dt;
}

// Once per optimizer step, before the first bf16 gather: this rank's shard rounded to bf16, and
// exact_ = every bf16-gathered unit's norm weights and biases, each rank filling in the elements
// it owns (zeros elsewhere) and an all-reduce summing them (x + 0 + ... = x exactly).
void ShardedParamStore::refresh_bf16_copies() {
  const int64_t n = shard_.numel();
  if (!shard16_.data) {
    shard16_ = as_bf16(alloc_f32((n + 1) / 2).data, n, be_.device());
    int64_t total = 0;
    for (const ExactRange& r : exact_ranges_) total = r.off + r.n;
    if (total > 0) exact_ = Tensor(dev_alloc(total * 4), DType::f32, {total}, dev_.device());  // the gathers' side
  }
  {
    HostTensor master(be_, shard_, true), rounded(be_, shard16_, false);
    round_to_bf16(master.f32(), rounded.host_view().bf16(), n);
    rounded.store();
    if (exact_.data) {
      HostTensor ex(dev_, exact_, false);
      float* e = ex.f32();
      std::fill(e, e + exact_.numel(), 0.0f);
      for (const ExactRange& r : exact_ranges_) {
        const int64_t len = shard_len_[size_t(r.unit)], own = rank_ * len;  // this rank's block in the unit
        const int64_t lo = std::max(r.at, own), hi = std::min(r.at + r.n, own + len);
        for (int64_t x = lo; x < hi; ++x) e[r.off + x - r.at] = master.f32()[shard_off_[size_t(r.unit)] + x - own];
      }
      ex.store();
    }
  }
  if (exact_.data) comm_.wait(comm_.all_reduce(exact_, ReduceOp::sum, "weights norms and biases fp32"));
  copies_stale_ = false;
}

int ShardedParamStore::resident_units() const {
  return int(std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.unit >= 0; }));
}

void ShardedParamStore::count_resident() { peak_resident_ = std::max(peak_resident_, resident_units()); }

int64_t ShardedParamStore::persistent_bytes() const {
  auto bytes = [](const Tensor& t) { return t.data ? int64_t(t.nbytes()) : 0; };  // (an empty Tensor's numel is 1)
  return bytes(shard_) * int64_t(2 + states_.size()) + bytes(full_) + bytes(exact_) + bytes(shard16_);
}

int ShardedParamStore::gather(int unit) {
  if (root_access_ && rank_ == 0) announce(double(unit));
  size_t s = slots_.size();  // a free slot, one with its buffer still allocated if there is one
  for (size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].unit < 0 && (s == slots_.size() || (slots_[i].buf.data && !slots_[s].buf.data))) s = i;
  if (s == slots_.size()) slots_.emplace_back();
  // In bf16 (set_gather_dtype) while training; loading, initialising and rank 0's reads take fp32.
  const bool b16 = gather_dtype_ == DType::bf16 && mode_ == ShardMode::full_shard && !root_access_ && gathers_bf16(unit);
  if (b16 && copies_stale_) refresh_bf16_copies();
  Slot& slot = slots_[s];
  if (!slot.buf.data) slot.buf = Tensor(dev_alloc(max_padded_ * 4), DType::f32, {max_padded_}, dev_.device());
  slot.unit = unit;
  slot.dtype = b16 ? DType::bf16 : DType::f32;
  const int64_t P = padded_[size_t(unit)], len = shard_len_[size_t(unit)], off = shard_off_[size_t(unit)];
  // The gather's input: this rank's block, or under offload its copy on the device (issued on the
  // device's stream ahead of the compute, as the gather is). A world of one gathers by the copy.
  Tensor in = b16 ? as_bf16(shard16_.bf16() + off, len, shard16_.device) : shard_of(shard_, unit);
  slot.by_comm = true;
  if (offload()) {
    if (world_ == 1) {
      dev_.copy_async(slot.buf.data, in.data, in.nbytes());
      slot.by_comm = false;
    } else {
      if (!slot.in.data) slot.in = Tensor(dev_alloc(max_shard_ * 4), DType::f32, {max_shard_}, dev_.device());
      dev_.copy_async(slot.in.data, in.data, in.nbytes());
      in.data = slot.in.data;
    }
    in.device = dev_.device();
  }
  if (slot.by_comm)
    slot.req = b16 ? comm_.all_gather(as_bf16(slot.buf.data, P, dev_.device()), in, gather_names_[size_t(unit)].c_str())
                   : comm_.all_gather(padded_unit(slot.buf.f32(), unit), in, gather_names_[size_t(unit)].c_str());
  gathered_bytes_ += P * (b16 ? 2 : 4);
  slot.pending = true;
  slot_of_[size_t(unit)] = int(s);
  count_resident();
  return int(s);
}

void ShardedParamStore::wait_slot(Slot& s) {
  if (!s.pending) return;
  if (s.by_comm) comm_.wait(s.req);
  s.pending = false;
  // One buffer holds unit after unit: derived copies (bf16 roundings) of its old contents go.
  dev_.invalidate_weight_copies(s.buf.data, size_t(padded_[size_t(s.unit)]) * 4);
}

// Pass order: forward embed → layers → head; backward (from the head's grads_ready to the
// embedding's) the reverse. Recompute re-runs a layer's forward inside its acquire: same order.
void ShardedParamStore::prefetch_after(int unit) {
  if (mode_ != ShardMode::full_shard || root_access_) return;
  const int next = backward_ ? unit - 1 : unit + 1;
  if (next < 0 || (!backward_ && unit == unit_head()) || next >= num_units()) return;
  if (slot_of_[size_t(next)] >= 0) return;  // held already (the tied embedding) or in flight
  gather(next);
}

void ShardedParamStore::acquire(int unit) {
  SFT_CHECK(unit >= 0 && unit < num_units(), "sharded_store", "acquire of unit {}, expected 0..{}", unit, num_units() - 1);
  if (refs_[size_t(unit)]++ > 0) return;
  if (mode_ == ShardMode::full_shard) {
    int s = slot_of_[size_t(unit)];
    if (s < 0) s = gather(unit);
    Slot& slot = slots_[size_t(s)];
    wait_slot(slot);
    if (slot.dtype == DType::bf16) bind16(unit, static_cast<uint16_t*>(slot.buf.data));
    else bind(w_, unit, slot.buf.f32());
  }
  if (!root_access_) {
    const int g = take_grad_buf(unit);
    bind(g_, unit, grad_bufs_[size_t(g)].buf.f32());
  }
  prefetch_after(unit);
}

void ShardedParamStore::release(int unit) {
  SFT_CHECK(refs_[size_t(unit)] > 0, "sharded_store", "release of unit {} ({}) that is not acquired", unit,
            units_[size_t(unit)].name);
  if (--refs_[size_t(unit)] > 0) return;
  if (const int gi = grad_of_[size_t(unit)]; gi >= 0) {  // its buffer stays busy while a reduce-scatter runs
    GradBuf& g = grad_bufs_[size_t(gi)];
    g.unit = -1;
    grad_of_[size_t(unit)] = -1;
    bind(g_, unit, nullptr);
    const size_t allocated =
        size_t(std::count_if(grad_bufs_.begin(), grad_bufs_.end(), [](const GradBuf& x) { return x.buf.data; }));
    if (g.rs_unit < 0 && allocated > size_t(keep_))
      for (Tensor* t : {&g.buf, &g.out, &g.buf16}) dev_free(*t);
  }
  if (mode_ != ShardMode::full_shard) return;
  const int s = slot_of_[size_t(unit)];
  Slot& slot = slots_[size_t(s)];
  wait_slot(slot);
  slot.unit = -1;
  slot_of_[size_t(unit)] = -1;
  bind(w_, unit, nullptr);
  const size_t allocated = size_t(std::count_if(slots_.begin(), slots_.end(), [](const Slot& x) { return x.buf.data; }));
  if (allocated > size_t(keep_)) {  // many units were held at once (initialisation, a save): give it back
    dev_free(slot.buf);
    dev_free(slot.in);
  }
}

void ShardedParamStore::written(int unit) {
  SFT_CHECK(refs_[size_t(unit)] > 0, "sharded_store", "written on unit {} ({}) that is not acquired", unit,
            units_[size_t(unit)].name);
  SFT_CHECK(mode_ != ShardMode::full_shard || slots_[size_t(slot_of_[size_t(unit)])].dtype == DType::f32,
            "sharded_store", "written on unit {} ({}), which is gathered in bf16: its weights were read-only",
            unit, units_[size_t(unit)].name);
  copies_stale_ = true;
  // Every rank wrote the same full unit; each keeps its block. The gathered copy is current.
  float* mem = unit_memory(unit);
  dev_.copy(shard_of(shard_, unit).data, mem + rank_ * shard_len_[size_t(unit)], size_t(shard_len_[size_t(unit)]) * 4);
  dev_.invalidate_weight_copies(mem, size_t(padded_[size_t(unit)]) * 4);
}

int ShardedParamStore::take_grad_buf(int unit) {
  // A free buffer; else a new one while fewer than keep_ exist; else the one whose
  // reduce-scatter was issued first (completed now, having overlapped the compute since).
  int pick = -1, unallocated = -1, oldest = -1, allocated = 0;
  for (size_t i = 0; i < grad_bufs_.size(); ++i) {
    const GradBuf& g = grad_bufs_[i];
    allocated += g.buf.data != nullptr;
    if (g.unit >= 0) continue;
    if (!g.buf.data) unallocated = int(i);
    else if (g.rs_unit < 0) pick = int(i);
    else if (oldest < 0 || reduce_issued_[i] < reduce_issued_[size_t(oldest)]) oldest = int(i);
  }
  if (pick < 0 && (allocated < keep_ || oldest < 0)) {
    if (unallocated < 0) {
      grad_bufs_.emplace_back();
      reduce_issued_.push_back(-1);
      unallocated = int(grad_bufs_.size()) - 1;
    }
    pick = unallocated;
  }
  if (pick < 0) pick = oldest;
  GradBuf& g = grad_bufs_[size_t(pick)];
  finish_reduce(g);  // the reduce-scatter of an earlier unit, overlapped until now
  if (!g.buf.data) {
    g.buf = Tensor(dev_alloc(max_padded_ * 4), DType::f32, {max_padded_}, dev_.device());
    g.out = Tensor(dev_alloc(max_shard_ * 4), DType::f32, {max_shard_}, dev_.device());
  }
  g.unit = unit;
  grad_of_[size_t(unit)] = pick;
  dev_.fill_zero(padded_unit(g.buf.f32(), unit));
  return pick;
}

void ShardedParamStore::grads_ready(int unit) {
  const int gi = grad_of_[size_t(unit)];
  SFT_CHECK(gi >= 0, "sharded_store", "grads_ready on unit {} ({}) that is not acquired", unit, units_[size_t(unit)].name);
  if (unit == unit_head()) {  // backward starts: prefetch the last layer before reducing the head
    backward_ = true;
    prefetch_after(unit);
  }
  GradBuf& g = grad_bufs_[size_t(gi)];
  // Sum over ranks (train_step's loss scale already divides by the step's global target count).
  const int64_t P = padded_[size_t(unit)], n = shard_len_[size_t(unit)];
  if (reduce_dtype_ == DType::bf16) {  // HF's bf16 reduce: rounded, summed in bf16, widened in finish_reduce
    if (!g.buf16.data) g.buf16 = as_bf16(dev_alloc(max_padded_ * 2), max_padded_, dev_.device());
    HostTensor full(dev_, padded_unit(g.buf.f32(), unit), true), rounded(dev_, as_bf16(g.buf16.data, P, dev_.device()), false);
    round_to_bf16(full.f32(), rounded.host_view().bf16(), P);
    rounded.store();
    g.req = comm_.reduce_scatter(as_bf16(g.out.data, n, dev_.device()), as_bf16(g.buf16.data, P, dev_.device()),
                                 ReduceOp::sum, reduce_names_[size_t(unit)].c_str());
  } else {
    g.req = comm_.reduce_scatter(block(g.out, 0, n), padded_unit(g.buf.f32(), unit), ReduceOp::sum,
                                 reduce_names_[size_t(unit)].c_str());
  }
  g.rs_dtype = reduce_dtype_;
  g.rs_unit = unit;
  reduce_issued_[size_t(gi)] = reduce_seq_++;
  if (unit == unit_embed()) {  // the pass's last unit: every gradient is in the shards on return
    backward_ = false;
    finish_all_reduces();
  }
}

void ShardedParamStore::finish_reduce(GradBuf& g) {
  if (g.rs_unit < 0) return;
  comm_.wait(g.req);
  const int64_t n = shard_len_[size_t(g.rs_unit)];
  if (Comm* across = nodes_.across.get()) {  // hybrid: this node's sum + the other nodes' = every rank's
    const Tensor block16 = as_bf16(g.out.data, n, dev_.device());
    across->wait(across->all_reduce(g.rs_dtype == DType::bf16 ? block16 : block(g.out, 0, n), ReduceOp::sum,
                                    reduce_names_[size_t(g.rs_unit)].c_str()));
  }
  // grad shard += this micro-batch's reduced block (host math; under offload the block comes
  // device→host, the shard is in host memory already)
  HostTensor acc(be_, shard_of(grad_shard_, g.rs_unit), true);
  float* a = acc.f32();
  const Tensor out = g.rs_dtype == DType::bf16 ? as_bf16(g.out.data, n, dev_.device()) : block(g.out, 0, n);
  std::optional<HostTensor> staged;  // without offload: the block itself on a host device, else a staged copy
  const void* reduced = grad_host_.data;
  if (offload()) dev_.copy(grad_host_.data, out.data, out.nbytes());  // waits for the reduce-scatter's end
  else reduced = staged.emplace(dev_, out, true).host_view().data;
  if (g.rs_dtype == DType::bf16) {
    const auto* b = static_cast<const uint16_t*>(reduced);
#pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) a[i] += bf16_to_f32(b[i]);
  } else {
    const auto* b = static_cast<const float*>(reduced);
#pragma omp parallel for schedule(static) if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  }
  acc.store();
  g.rs_unit = -1;
}

void ShardedParamStore::finish_all_reduces() {
  std::vector<size_t> order;
  for (size_t i = 0; i < grad_bufs_.size(); ++i)
    if (grad_bufs_[i].rs_unit >= 0) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return reduce_issued_[a] < reduce_issued_[b]; });
  for (size_t i : order) finish_reduce(grad_bufs_[i]);
  // Offload: no host→device copy of a shard is in flight once the host may write the shards (the
  // optimizer step follows the backward; a forward-only pass is followed by another pass).
  if (offload()) dev_.synchronize();
}

void ShardedParamStore::params_updated() {
  finish_all_reduces();
  copies_stale_ = true;
  if (mode_ != ShardMode::shard_grad_op) return;  // full_shard gathers the new shards on the next acquire
  std::vector<CommRequest> reqs;
  for (int u = 0; u < num_units(); ++u)
    reqs.push_back(comm_.all_gather(padded_unit(unit_memory(u), u), shard_of(shard_, u), gather_names_[size_t(u)].c_str()));
  for (CommRequest r : reqs) comm_.wait(r);
  be_.invalidate_weight_copies(full_.data, size_t(full_.numel()) * 4);
}

double ShardedParamStore::grad_sum_squares() {
  finish_all_reduces();
  if (!nodes_.first) return 0.0;
  return be_.sum_squares(grad_shard_);
}

}  // namespace sft
