// The parameter store seam: units tile the flat layout in the order a pass uses them; forward,
// backward, recompute and generation acquire and release every unit around its use and report
// its gradients right after its backward (also for a batch without rows); and a forward after an
// optimizer update or a written unit never runs on a stale bf16 copy of a weight.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "backend/backend.h"
#include "backend/host_access.h"
#include "model/generate.h"
#include "model/init.h"
#include "train/optimizer.h"

namespace sft {

namespace {

LlamaConfig tiny_config(bool tied = false) {
  LlamaConfig c;
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = tied;
  return c;
}

Batch make_batch(int64_t B, int64_t T, uint64_t seed) { return random_token_batch(B, T, 61, seed); }

// A LocalParamStore that records what the model asks of it.
class RecordingStore final : public LocalParamStore {
 public:
  using LocalParamStore::LocalParamStore;
  std::vector<std::string> log;
  void acquire(int u) override { log.push_back("acquire " + units()[size_t(u)].name); }
  void release(int u) override { log.push_back("release " + units()[size_t(u)].name); }
  void grads_ready(int u) override { log.push_back("grads " + units()[size_t(u)].name); }
};

}  // namespace

TEST(ParamStore, UnitsTileTheLayoutInPassOrder) {
  for (bool tied : {false, true}) {
    auto be = create_backend("cpu");
    LlamaModel model(tiny_config(tied), *be);
    const ParamStore& ps = model.store();
    ASSERT_EQ(ps.num_units(), 3 + 2);
    EXPECT_EQ(ps.units().front().name, "embed");
    EXPECT_EQ(ps.units()[2].name, "layers.1");
    EXPECT_EQ(ps.units().back().name, "head");
    int64_t next = 0;
    for (const ParamUnit& u : ps.units()) {
      EXPECT_EQ(u.offset, next) << u.name;
      next += u.size;
    }
    EXPECT_EQ(next, model.num_params());
    for (const ParamRef& p : ps.param_table()) {
      const ParamUnit& u = ps.units()[size_t(p.unit)];
      EXPECT_GE(p.offset, u.offset) << p.hf_name;
      EXPECT_LE(p.offset + p.view.numel(), u.offset + u.size) << p.hf_name;
      EXPECT_EQ(p.view.f32(), model.params_flat().f32() + p.offset) << p.hf_name;
    }
    // Tied: the head unit is the final norm alone (the LM head is the embedding's memory).
    EXPECT_EQ(ps.units().back().size, tied ? 32 : 32 + 61 * 32);
  }
}

// In both matmul dtypes: bf16 runs this CPU's bf16 routes (AMX GEMMs and attention where present)
// on the batch without rows too.
TEST(ParamStore, EveryPassWalksTheUnitsInOrder) {
  for (DType dt : {DType::f32, DType::bf16})
  for (bool tied : {false, true})
    for (bool recompute : {false, true}) {
      auto be = create_backend("cpu");
      be->set_matmul_dtype(dt);
      const LlamaConfig cfg = tiny_config(tied);
      auto store = std::make_unique<RecordingStore>(cfg, *be);
      RecordingStore& rec = *store;
      LlamaModel model(cfg, *be, ModelOptions{.recompute = recompute}, std::move(store));
      init_weights(model, 3);
      for (const Batch& b : {make_batch(2, 9, 1), Batch{}}) {  // a batch without rows walks the same units
        rec.log.clear();
        model.forward_backward(b, 0.1f);
        std::vector<std::string> want = {"acquire embed"};
        if (!tied) want.push_back("release embed");
        for (const char* l : {"layers.0", "layers.1", "layers.2"}) {
          want.push_back(std::string("acquire ") + l);
          want.push_back(std::string("release ") + l);
        }
        want.insert(want.end(), {"acquire head", "grads head", "release head"});
        for (const char* l : {"layers.2", "layers.1", "layers.0"})
          want.insert(want.end(), {std::string("acquire ") + l, std::string("grads ") + l, std::string("release ") + l});
        if (!tied) want.push_back("acquire embed");
        want.insert(want.end(), {"grads embed", "release embed"});
        EXPECT_EQ(rec.log, want) << "tied " << tied << " recompute " << recompute << " rows " << b.B;
      }
      // Generation: the same units around the same decoder layer, no gradients.
      rec.log.clear();
      Generator gen(model, 16);
      gen.feed({1, 2, 3});
      std::vector<std::string> want = {"acquire embed"};
      if (!tied) want.push_back("release embed");
      for (const char* l : {"layers.0", "layers.1", "layers.2"}) {
        want.push_back(std::string("acquire ") + l);
        want.push_back(std::string("release ") + l);
      }
      want.insert(want.end(), {"acquire head", "release head"});
      if (tied) want.push_back("release embed");
      EXPECT_EQ(rec.log, want);
    }
}

// bf16 GEMMs derive a rounded copy of each weight. After an optimizer update, or a unit written
// through the store, the next pass must see the new weights: the same loss, bit for bit, as a
// fresh model that was given those weights before it ever ran.
TEST(ParamStore, NoPassSeesAStaleDerivedCopy) {
  auto be = create_backend("cpu");
  be->set_matmul_dtype(DType::bf16);
  const Batch b = make_batch(2, 12, 5);
  LlamaModel model(tiny_config(), *be);
  init_weights(model, 4);
  AdamW opt(model, AdamWConfig{0.9f, 0.999f, 1e-8f, 0.0f});
  auto fresh_loss = [&] {  // a new model with the current weights, never run before
    LlamaModel other(tiny_config(), *be);
    std::memcpy(other.params_flat().data, model.params_flat().data, model.params_flat().nbytes());
    for (int u = 0; u < other.store().num_units(); ++u) other.store().written(u);
    return other.forward(b);
  };
  for (int s = 0; s < 3; ++s) {
    model.zero_grad();
    model.forward_backward(b, 1.0f / float(b.num_targets()));
    opt.step(5e-2f);  // large enough that every bf16 rounding changes
    EXPECT_EQ(model.forward(b), fresh_loss()) << "after update " << s;
  }
  // A unit rewritten in place (as a load or a gather buffer does), then reported as written.
  ParamStore& ps = model.store();
  const int u = ps.unit_layer(1);
  ps.acquire(u);
  {
    const Tensor w = ps.weights().layers[1].wgu;
    HostTensor h(*be, w, true);
    for (int64_t i = 0; i < w.numel(); ++i) h.f32()[i] *= -1.5f;
    h.store();
  }
  ps.written(u);
  ps.release(u);
  EXPECT_EQ(model.forward(b), fresh_loss()) << "after a written unit";
}

}  // namespace sft
