// Weight packing into oneDNN's AMX B layout (pack_b.h): the plain reference and the dispatch,
// threads taking 64-column blocks of B; fp32 and bf16 weights alike.
#include "backend/cpu/pack_b.h"

#include "backend/cpu/cpu_features.h"
#include "core/dtype.h"

namespace sft::cpu {

bool is_blocked_b(const dnnl_memory_desc_t& d, int64_t K, int64_t N) {
  const BlockedB b{K, N};
  const auto& blk = d.format_desc.blocking;
  return d.ndims == 2 && d.data_type == dnnl_bf16 && d.format_kind == dnnl_blocked && d.offset0 == 0 &&
         d.extra.flags == 0 && d.dims[0] == K && d.dims[1] == N && d.padded_dims[0] == b.Kp() &&
         d.padded_dims[1] == b.Np() && blk.inner_nblks == 3 && blk.inner_blks[0] == 16 && blk.inner_idxs[0] == 0 &&
         blk.inner_blks[1] == 64 && blk.inner_idxs[1] == 1 && blk.inner_blks[2] == 2 && blk.inner_idxs[2] == 0 &&
         blk.strides[0] == b.kK * b.kN && blk.strides[1] == b.Kp() * b.kN;
}

namespace {

uint16_t to_bf16(float v) { return f32_to_bf16(v); }
uint16_t to_bf16(uint16_t v) { return v; }

template <class Src>
void reference(const Src* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst) {
  const BlockedB b{b_is_wT ? IC : OC, b_is_wT ? OC : IC};
  for (int64_t k = 0; k < b.Kp(); ++k)
    for (int64_t n = 0; n < b.Np(); ++n) {
      const bool inside = k < b.K && n < b.N;
      dst[b.offset(k, n)] = inside ? to_bf16(b_is_wT ? w[n * IC + k] : w[k * IC + n]) : 0;
    }
}

template <class Src>
void pack_one(const Src* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst) {
  if (!cpu_features().avx512) return reference(w, OC, IC, b_is_wT, dst);
  const int64_t n_blocks = BlockedB{b_is_wT ? IC : OC, b_is_wT ? OC : IC}.Np() / BlockedB::kN;
#pragma omp parallel for schedule(static) if (OC * IC > (1 << 16))
  for (int64_t nb = 0; nb < n_blocks; ++nb) detail::pack_b_bf16_avx512(w, OC, IC, b_is_wT, dst, nb, nb + 1);
}

template <class Src>
void pack_both(const Src* w, int64_t OC, int64_t IC, uint16_t* fwd, uint16_t* dx) {
  if (!cpu_features().avx512) {
    reference(w, OC, IC, true, fwd);
    return reference(w, OC, IC, false, dx);
  }
  const int64_t o_tiles = (OC + BlockedB::kN - 1) / BlockedB::kN;
#pragma omp parallel for schedule(static) if (OC * IC > (1 << 16))
  for (int64_t t = 0; t < o_tiles; ++t) detail::pack_b_bf16_both_avx512(w, OC, IC, fwd, dx, t, t + 1);
}

}  // namespace

void pack_b_bf16_reference(const float* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst) {
  reference(w, OC, IC, b_is_wT, dst);
}
void pack_b_bf16_reference(const uint16_t* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst) {
  reference(w, OC, IC, b_is_wT, dst);
}
void pack_b_bf16(const float* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst) {
  pack_one(w, OC, IC, b_is_wT, dst);
}
void pack_b_bf16(const uint16_t* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst) {
  pack_one(w, OC, IC, b_is_wT, dst);
}
void pack_b_bf16_both(const float* w, int64_t OC, int64_t IC, uint16_t* fwd, uint16_t* dx) {
  pack_both(w, OC, IC, fwd, dx);
}
void pack_b_bf16_both(const uint16_t* w, int64_t OC, int64_t IC, uint16_t* fwd, uint16_t* dx) {
  pack_both(w, OC, IC, fwd, dx);
}

}  // namespace sft::cpu
