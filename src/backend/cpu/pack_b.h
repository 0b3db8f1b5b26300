// A weight rounded to bf16 straight into the blocked B layout of oneDNN 2.6's AMX matmul kernels
// ("BA16a64b2a": 32 x 64 blocks of (k, n), k-pairs adjacent), replacing a rounding pass plus a
// oneDNN reorder (which ran at about 7 GB/s and cost 9% of a base bf16 step on a 2-core Xeon).
// matmul.cpp uses it only after checking that oneDNN asked for exactly this layout.
#pragma once
#include <cstdint>

#include <oneapi/dnnl/dnnl_types.h>

namespace sft::cpu {

// B (K, N) padded to (Kp, Np): element (k, n) at offset(k, n); padding holds zeros.
struct BlockedB {
  static constexpr int64_t kK = 32, kN = 64;  // block extent along k (16 pairs) and n
  int64_t K = 0, N = 0;
  int64_t Kp() const { return (K + kK - 1) / kK * kK; }
  int64_t Np() const { return (N + kN - 1) / kN * kN; }
  int64_t size() const { return Kp() * Np(); }  // elements
  int64_t offset(int64_t k, int64_t n) const {
    return (n / kN) * Kp() * kN + (k / kK) * (kK * kN) + (k % kK) / 2 * (2 * kN) + (n % kN) * 2 + k % 2;
  }
};

// Whether a oneDNN memory descriptor is exactly BlockedB{K, N} (BA16a64b2a, dense, bf16): the
// layout oneDNN's AMX matmul asks for on most shapes (small ones get others, e.g. 32-wide blocks).
bool is_blocked_b(const dnnl_memory_desc_t& d, int64_t K, int64_t N);

// dst (BlockedB{K, N}.size() bf16) = B rounded to bf16, where w (OC, IC) is an fp32 weight stored
// row-major as torch's nn.Linear and B = wᵀ (K = IC, N = OC: the forward's y = x·wᵀ) when
// b_is_wT, else B = w (K = OC, N = IC: the backward's dx = dout·w). AVX-512 where the CPU has it.
// The uint16_t overloads take a bf16 weight (a unit gathered in bf16), laid out unchanged.
void pack_b_bf16(const float* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst);
void pack_b_bf16(const uint16_t* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst);
// Both forms in one pass over w (64 x 64 tiles, read from memory once): fwd = the B = wᵀ form,
// dx = the B = w form, as two calls of pack_b_bf16 would write them.
void pack_b_bf16_both(const float* w, int64_t OC, int64_t IC, uint16_t* fwd, uint16_t* dx);
void pack_b_bf16_both(const uint16_t* w, int64_t OC, int64_t IC, uint16_t* fwd, uint16_t* dx);
// The plain loops they are tested against.
void pack_b_bf16_reference(const float* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst);
void pack_b_bf16_reference(const uint16_t* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst);

namespace detail {
// Blocks [n_blk0, n_blk1) of the layout (all k-blocks of each); AVX-512F/BW.
void pack_b_bf16_avx512(const float* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst, int64_t n_blk0,
                        int64_t n_blk1);
void pack_b_bf16_avx512(const uint16_t* w, int64_t OC, int64_t IC, bool b_is_wT, uint16_t* dst, int64_t n_blk0,
                        int64_t n_blk1);
// Weight rows [64 o_tile0, 64 o_tile1) into both forms.
void pack_b_bf16_both_avx512(const float* w, int64_t OC, int64_t IC, uint16_t* fwd, uint16_t* dx, int64_t o_tile0,
                             int64_t o_tile1);
void pack_b_bf16_both_avx512(const uint16_t* w, int64_t OC, int64_t IC, uint16_t* fwd, uint16_t* dx,
                             int64_t o_tile0, int64_t o_tile1);
}  // namespace detail

}  // namespace sft::cpu
