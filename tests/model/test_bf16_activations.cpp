// bf16 activation storage (Backend::bf16_activations): where the bf16 GEMMs run on oneDNN (AMX,
// or oneDNN's vdpbf16ps kernels), the GEMM-only operands xn1, xn2, h and dgu are stored in bf16
// by the ops that produce them. That must change nothing: the losses and every gradient of a
// forward-backward, with and without recompute, with q/k/v/o biases and tied embeddings, equal
// the fp32-storage run (SFT_BF16_ACTIVATIONS=0) bit for bit.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/host_access.h"
#include "model/init.h"
#include "model/llama.h"

namespace sft {
namespace {

LlamaConfig config(bool big, bool bias, bool tied) {
  LlamaConfig c;
  c.vocab_size = big ? 1000 : 61;
  c.hidden_size = big ? 256 : 32;
  c.intermediate_size = big ? 704 : 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = big ? 64 : 8;  // 64: the AMX attention where the CPU has tiles
  c.max_position_embeddings = 512;
  c.attention_bias = bias;
  c.tie_word_embeddings = tied;
  return c;
}

// A CPU backend in bf16 whose bf16 GEMMs run on oneDNN (SFT_GEMM=onednn where our own kernels
// would be chosen), with bf16 activations allowed or not; null where no such route exists.
std::unique_ptr<Backend> bf16_backend(bool activations16) {
  const char* gemm = std::getenv("SFT_GEMM");
  const std::string saved = gemm ? gemm : "";
  setenv("SFT_GEMM", "onednn", 1);
  setenv("SFT_BF16_ACTIVATIONS", activations16 ? "1" : "0", 1);
  auto be = create_backend("cpu");
  if (gemm) setenv("SFT_GEMM", saved.c_str(), 1);
  else unsetenv("SFT_GEMM");
  unsetenv("SFT_BF16_ACTIVATIONS");
  be->set_matmul_dtype(DType::bf16);
  return be;
}

struct Result {
  double loss;
  std::vector<float> grads;
};

Result run(Backend& be, const LlamaConfig& cfg, bool recompute, const Batch& b) {
  LlamaModel model(cfg, be, ModelOptions{.recompute = recompute, .head_chunk = 128});
  init_weights(model, 7);
  be.fill_zero(model.grads_flat());
  Result r;
  r.loss = model.forward_backward(b, 1.0f / float(b.num_targets()));
  const Tensor g = model.grads_flat();
  const HostTensor h(be, g, true);
  r.grads.assign(h.f32(), h.f32() + g.numel());
  return r;
}

TEST(Bf16Activations, BitIdenticalToFp32Storage) {
  if (!cpu::cpu_features().avx512_bf16 && !cpu::cpu_features().amx_usable())
    GTEST_SKIP() << "this CPU has no oneDNN bf16 GEMM route (needs AVX512-BF16 or AMX), so activations stay fp32";
  auto on = bf16_backend(true), off = bf16_backend(false);
  ASSERT_TRUE(on->bf16_activations()) << on->route_report();
  ASSERT_FALSE(off->bf16_activations());
  for (bool big : {false, true})
    for (bool bias : {false, true})
      for (bool recompute : {false, true}) {
        const LlamaConfig cfg = config(big, bias, /*tied=*/bias);
        // B rows of one sequence each; 2 x 300 tokens split over threads in ragged row blocks
        Batch b = random_token_batch(2, big ? 300 : 23, int32_t(cfg.vocab_size), 11);
        const Result a = run(*on, cfg, recompute, b), z = run(*off, cfg, recompute, b);
        const std::string what = "big " + std::to_string(big) + " bias " + std::to_string(bias) + " recompute " +
                                 std::to_string(recompute);
        EXPECT_EQ(a.loss, z.loss) << what;
        ASSERT_EQ(a.grads.size(), z.grads.size());
        size_t differ = 0;
        for (size_t i = 0; i < a.grads.size(); ++i) differ += std::memcmp(&a.grads[i], &z.grads[i], 4) != 0;
        EXPECT_EQ(differ, 0u) << what << ": gradients differ in " << differ << " of " << a.grads.size();
        double norm = 0;
        for (float v : a.grads) norm += double(v) * v;
        EXPECT_GT(norm, 0.0) << what;  // the comparison saw real gradients
      }
}

}  // namespace
}  // namespace sft
