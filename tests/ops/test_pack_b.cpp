// Weight packing into oneDNN's AMX B layout (backend/cpu/pack_b.h): the AVX-512 kernels (one form,
// both forms in one pass; fp32 and bf16 weights) bit-exact against the plain reference on ragged shapes, with NaN,
// infinities, denormals and ties; and the reference layout byte-identical to what oneDNN's own reorder writes wherever its
// AMX matmul asks for that layout (is_blocked_b; skipped where it never does: no AMX).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "backend/backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/pack_b.h"
#include "core/aligned_vector.h"
#include "core/dtype.h"
#include "ops_test_util.h"

namespace sft {
namespace {

std::vector<float> weight(int64_t OC, int64_t IC, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(size_t(OC * IC));
  for (float& v : w) v = nd(rng);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 1e-40f, -3e-39f, 1.00390625f /* tie */, 0.0f,
                            -0.0f};
  for (size_t i = 0; i < w.size(); i += 7) w[i] = specials[(i / 7) % 8];
  return w;
}

const std::pair<int64_t, int64_t> kShapes[] = {{1, 1}, {17, 45}, {64, 32}, {100, 70}, {129, 200}, {96, 768}, {300, 33}};

TEST(PackB, Avx512MatchesReferenceOnRaggedShapes) {
  if (!cpu::cpu_features().avx512) GTEST_SKIP() << "CPU lacks AVX-512: pack_b_bf16 runs the reference";
  for (auto [OC, IC] : kShapes)
    for (bool wT : {true, false}) {
      const std::vector<float> w = weight(OC, IC, uint32_t(OC * 1000 + IC));
      const cpu::BlockedB b{wT ? IC : OC, wT ? OC : IC};
      AlignedVector<uint16_t> fast(size_t(b.size()), 0xdead);
      std::vector<uint16_t> ref(size_t(b.size()), 0xbeef);
      cpu::pack_b_bf16(w.data(), OC, IC, wT, fast.data());
      cpu::pack_b_bf16_reference(w.data(), OC, IC, wT, ref.data());
      for (int64_t i = 0; i < b.size(); ++i)
        ASSERT_EQ(fast[size_t(i)], ref[size_t(i)]) << "w (" << OC << ", " << IC << ") " << (wT ? "B = wT" : "B = w")
                                                   << " element " << i;
    }
}

TEST(PackB, BothFormsInOnePassMatchTheReference) {
  for (auto [OC, IC] : kShapes) {
    const std::vector<float> w = weight(OC, IC, uint32_t(OC * 31 + IC));
    const cpu::BlockedB bf{IC, OC}, bd{OC, IC};
    AlignedVector<uint16_t> fwd(size_t(bf.size()), 0xdead), dx(size_t(bd.size()), 0xdead);
    std::vector<uint16_t> ref_fwd(size_t(bf.size())), ref_dx(size_t(bd.size()));
    cpu::pack_b_bf16_both(w.data(), OC, IC, fwd.data(), dx.data());
    cpu::pack_b_bf16_reference(w.data(), OC, IC, true, ref_fwd.data());
    cpu::pack_b_bf16_reference(w.data(), OC, IC, false, ref_dx.data());
    for (int64_t i = 0; i < bf.size(); ++i)
      ASSERT_EQ(fwd[size_t(i)], ref_fwd[size_t(i)]) << "w (" << OC << ", " << IC << ") B = wT element " << i;
    for (int64_t i = 0; i < bd.size(); ++i)
      ASSERT_EQ(dx[size_t(i)], ref_dx[size_t(i)]) << "w (" << OC << ", " << IC << ") B = w element " << i;
  }
}

// A bf16 weight (a unit gathered in bf16) packs, in both calls and every form, to exactly what its
// fp32 original packs to: the packed values are the same roundings.
TEST(PackB, Bf16WeightsPackLikeTheFp32WeightsTheyRoundFrom) {
  for (auto [OC, IC] : kShapes) {
    const std::vector<float> w = weight(OC, IC, uint32_t(OC * 17 + IC));
    std::vector<uint16_t> w16(w.size());
    for (size_t i = 0; i < w.size(); ++i) w16[i] = f32_to_bf16(w[i]);
    const cpu::BlockedB bf{IC, OC}, bd{OC, IC};
    for (bool wT : {true, false}) {
      const cpu::BlockedB& b = wT ? bf : bd;
      AlignedVector<uint16_t> from32(size_t(b.size()), 0xdead), from16(size_t(b.size()), 0xbeef);
      std::vector<uint16_t> ref16(size_t(b.size()), 0x1234);
      cpu::pack_b_bf16(w.data(), OC, IC, wT, from32.data());
      cpu::pack_b_bf16(w16.data(), OC, IC, wT, from16.data());
      cpu::pack_b_bf16_reference(w16.data(), OC, IC, wT, ref16.data());
      ASSERT_TRUE(std::equal(from32.begin(), from32.end(), from16.begin())) << "w (" << OC << ", " << IC << ") " << wT;
      ASSERT_TRUE(std::equal(from32.begin(), from32.end(), ref16.begin())) << "w (" << OC << ", " << IC << ") " << wT;
    }
    AlignedVector<uint16_t> f32f(size_t(bf.size())), f32d(size_t(bd.size())), f16f(size_t(bf.size()), 1),
        f16d(size_t(bd.size()), 1);
    cpu::pack_b_bf16_both(w.data(), OC, IC, f32f.data(), f32d.data());
    cpu::pack_b_bf16_both(w16.data(), OC, IC, f16f.data(), f16d.data());
    EXPECT_TRUE(f32f == f16f && f32d == f16d) << "both forms, w (" << OC << ", " << IC << ")";
  }
}

TEST(PackB, ReferenceIsTheLayoutOneDnnsAmxMatmulAsksFor) {
  using dnnl::memory;
  using Tag = memory::format_tag;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  (void)cpu::cpu_features();  // asks Linux for AMX tile state, as the backend does
  int checked = 0;
  std::string chosen;
  for (auto [OC, IC] : kShapes)
    for (bool wT : {true, false}) {
      const int64_t K = wT ? IC : OC, N = wT ? OC : IC, M = 48;
      const memory::desc a({M, K}, memory::data_type::bf16, Tag::ab), c({M, N}, memory::data_type::f32, Tag::ab);
      const dnnl::matmul::primitive_desc pd(
          dnnl::matmul::desc(a, memory::desc({K, N}, memory::data_type::bf16, Tag::any), c), eng);
      const cpu::BlockedB b{K, N};
      if (!cpu::is_blocked_b(pd.weights_desc().data, K, N)) {  // small shapes get other layouts
        chosen = pd.impl_info_str();
        continue;
      }
      ASSERT_EQ(pd.weights_desc().get_size(), size_t(b.size()) * 2) << "w (" << OC << ", " << IC << ")";
      ++checked;
      const std::vector<float> w = weight(OC, IC, uint32_t(OC * 7 + IC));
      std::vector<uint16_t> w16(w.size());
      for (size_t i = 0; i < w.size(); ++i) w16[i] = f32_to_bf16(w[i]);
      // B = wᵀ is w's memory read as (K, N) "ba"; B = w is "ab"
      memory src(memory::desc({K, N}, memory::data_type::bf16, wT ? Tag::ba : Tag::ab), eng, w16.data());
      AlignedVector<uint16_t> onednn(size_t(b.size()), 0x7777);
      memory dst(pd.weights_desc(), eng, onednn.data());
      dnnl::reorder(src, dst).execute(s, src, dst);
      s.wait();
      std::vector<uint16_t> ref(size_t(b.size()));
      cpu::pack_b_bf16_reference(w.data(), OC, IC, wT, ref.data());
      for (int64_t i = 0; i < b.size(); ++i) {
        ASSERT_EQ(ref[size_t(i)], onednn[size_t(i)]) << "w (" << OC << ", " << IC << ") " << (wT ? "B = wT" : "B = w")
                                                     << " element " << i;
      }
    }
  if (checked == 0) GTEST_SKIP() << "oneDNN chose " << chosen << " here, not its AMX kernel's blocked layout";
  // where AMX is usable, the model-sized shapes get the blocked layout (else packing falls back to reorders)
  if (cpu::cpu_features().amx_usable()) {
    EXPECT_GE(checked, 4);
  }
}

// CpuBackend's bf16 linear layers through many row counts (as batches padded to their longest
// row give), the weight rewritten between steps so both packed forms are refreshed each time:
// more GEMM shapes than the backend keeps primitives for, so its cache is cleared while weights
// are being packed (a layout kept by reference across that clear was once read after it was
// freed). Results against double sums of the bf16-rounded operands.
TEST(PackB, LinearLayersStayRightAcrossManyRowCounts) {
  auto be = create_backend("cpu");
  be->set_matmul_dtype(DType::bf16);
  be->invalidate_weight_copies(nullptr, 0);  // the parameter store's contract: copies kept until written
  const int64_t OC = 192, IC = 96;
  std::vector<float> w = test::randn(size_t(OC * IC), 7);
  auto r = [](float v) { return double(bf16_to_f32(f32_to_bf16(v))); };
  for (int64_t N = 1; N <= 90; ++N) {
    for (float& v : w) v *= 0.999f;  // an optimizer step: the weight changes, its copies are stale
    be->invalidate_weight_copies(w.data(), w.size() * 4);
    const std::vector<float> x = test::randn(size_t(N * IC), uint32_t(N)), d = test::randn(size_t(N * OC), uint32_t(N + 500));
    std::vector<float> out(size_t(N * OC)), dx(size_t(N * IC)), dw(size_t(OC * IC), 0.0f);
    const Tensor tw(w.data(), DType::f32, {OC, IC});
    be->linear_forward(Tensor(out.data(), DType::f32, {N, OC}), Tensor(const_cast<float*>(x.data()), DType::f32, {N, IC}),
                       tw, Tensor(), false);
    be->linear_backward(Tensor(dx.data(), DType::f32, {N, IC}), Tensor(dw.data(), DType::f32, {OC, IC}), Tensor(),
                        Tensor(const_cast<float*>(d.data()), DType::f32, {N, OC}),
                        Tensor(const_cast<float*>(x.data()), DType::f32, {N, IC}), tw, false);
    for (int64_t n = 0; n < N; n += 7)
      for (int64_t o = 0; o < OC; o += 5) {
        double ref = 0;
        for (int64_t i = 0; i < IC; ++i) ref += r(x[size_t(n * IC + i)]) * r(w[size_t(o * IC + i)]);
        ASSERT_NEAR(out[size_t(n * OC + o)], ref, 1e-3 * (1 + std::fabs(ref))) << "forward N " << N;
      }
    for (int64_t n = 0; n < N; n += 7)
      for (int64_t i = 0; i < IC; i += 5) {
        double ref = 0;
        for (int64_t o = 0; o < OC; ++o) ref += r(d[size_t(n * OC + o)]) * r(w[size_t(o * IC + i)]);
        ASSERT_NEAR(dx[size_t(n * IC + i)], ref, 1e-3 * (1 + std::fabs(ref))) << "dx N " << N;
      }
    for (int64_t o = 0; o < OC; o += 11)
      for (int64_t i = 0; i < IC; i += 5) {
        double ref = 0;
        for (int64_t n = 0; n < N; ++n) ref += r(d[size_t(n * OC + o)]) * r(x[size_t(n * IC + i)]);
        ASSERT_NEAR(dw[size_t(o * IC + i)], ref, 1e-3 * (1 + std::fabs(ref))) << "dw N " << N;
      }
  }
}

}  // namespace
}  // namespace sft
