// GEMM of the CPU linear layers: C (M, N) = / += op(A) (M, K) · op(B) (K, N) (+ bias (N)) on fp32
// data, with fp32 operands or operands rounded to bf16 (round to nearest even, exactly as
// convert_f32_to_bf16) and fp32 accumulation. Four implementations: ours on AVX-512
// (gemm_avx512.cpp), ours on AMX tiles (gemm_amx.cpp), oneDNN's matmul (matmul.cpp) and a plain
// reference in double (reference.cpp) that the op tests compare against.
#pragma once
#include <cstdint>

namespace sft::cpu {

// Row-major operands, leading dimensions in elements. A is stored (M, K), or (K, M) when trans_a;
// B is stored (K, N), or (N, K) when trans_b; C is (M, N). bias, if given, has N entries.
struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;
  int64_t lda = 0;
  const float* B = nullptr;
  int64_t ldb = 0;
  float* C = nullptr;
  int64_t ldc = 0;
  const float* bias = nullptr;
  bool accumulate = false;  // C += op(A)·op(B) instead of C =
  // B given as bf16 values (uint16 bits, same layout and ldb) instead of fp32 in B: a bf16 weight
  // operand. Ours and oneDNN read it; ref::gemm does not (tests widen it to fp32 first).
  const uint16_t* B16 = nullptr;
  // gemm_f32_avx512 only: round both operands to bf16 while packing, then fp32 FMA math: the bf16
  // GEMM's results on CPUs where vdpbf16ps is slower than FMA or missing.
  bool round_bf16 = false;
};

// Ours. Call only where gemm_avx512_supported(bf16) holds (AVX-512 F/BW/DQ/VL, + BF16 for bf16).
bool gemm_avx512_supported(bool bf16);
void gemm_f32_avx512(const GemmArgs& g);
void gemm_bf16_avx512(const GemmArgs& g);
// GFLOP/s of register-only vfmadd231ps (fp32) or vdpbf16ps (bf16) loops on all OpenMP threads
// (peak_avx512.cpp; ~0.1 s): the peak MFU is measured against.
double measure_peak_gflops_avx512(bool bf16);
// GFLOP/s of a tile-only tdpbf16ps loop on all OpenMP threads (peak_amx.cpp; ~0.15 s); 0 where
// AMX-BF16 is not usable (cpu_features().amx_usable()).
double measure_peak_gflops_amx();

// Ours on AMX tiles (gemm_amx.cpp): C (M, N) = / += op(A) (M, K) · B (K, N) (+ bias (N)) with
// fp32 accumulation. A is fp32 (g.A) or bf16 (a16), stored (M, K) or, trans_a, (K, M) with leading
// dimension g.lda, and rounded to bf16 while it is packed (as convert_f32_to_bf16); B is already
// bf16 in the blocked layout of pack_b.h (BlockedB{K, N}). g.B, g.B16, g.trans_b are not read.
// Call only where cpu_features().amx_usable(). Each element's sum runs in the same order whatever
// the thread count.
void gemm_amx(const GemmArgs& g, const uint16_t* a16, const uint16_t* b_blocked);

// oneDNN matmul (dense operands: lda, ldb, ldc equal to the stored row lengths). With bf16 the
// operands are first rounded into scratch buffers; gemm_onednn_bf16 takes them already rounded.
void gemm_onednn(const GemmArgs& g, bool bf16);
void gemm_onednn_bf16(const GemmArgs& g, const uint16_t* A_bf16, const uint16_t* B_bf16);

namespace ref {
// Plain loops in double over the operands (rounded to bf16 first when bf16); C as in GemmArgs.
void gemm(const GemmArgs& g, bool bf16);
}  // namespace ref

}  // namespace sft::cpu
