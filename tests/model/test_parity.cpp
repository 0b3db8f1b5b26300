// Whole-model parity against HF Transformers, the project's primary correctness test (after llm.c's
// test_gpt2): tools/make_reference.py writes tiny random Llama/Qwen2 models, a packed + padded batch,
// and HF's logits, loss, every gradient and 10 torch.optim.AdamW step losses; each case is loaded
// into LlamaModel on the CPU backend and compared in fp32 and in bf16-GEMM mode. Also: recompute
// is bit-exact, and the comparator fails on a perturbed model (it is not vacuous).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "io/hf_model.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "train/optimizer.h"

namespace sft {
namespace {

namespace fs = std::filesystem;

// ---- tolerances (one table) -----------------------------------------------------------------
// Metric for every tensor: max|a - b| / max(max|b|, 1e-30) (llm.c test_gpt2 style). Pure
// elementwise relative error is meaningless for elements near 0, which every gradient has.
struct Tolerances {
  double logits, loss, grads, adamw_loss;
};
// fp32: torch and sft accumulate in different orders. Measured on these cases: logits <= 4.9e-7,
// loss <= 8.6e-8, grads <= 6.1e-6 (a k_proj bias, whose gradient is mostly cancellation), AdamW
// step losses <= 1.4e-7. 1e-4 leaves 16x+ margin and still catches real errors: one norm-weight
// element off by 1e-3 already fails (ComparatorIsNotVacuous). torch's own fp32 vs fp64 AdamW
// trajectories at the generator's lr agree to 3e-7 per step, so 1e-4 holds for all 10 steps.
constexpr Tolerances kFp32{1e-4, 1e-4, 1e-4, 1e-4};
// bf16 GEMM operands (8-bit mantissa: relative rounding up to 2^-9 = 2e-3 per operand, fp32
// accumulation). make_reference.py --bf16-report emulates exactly this (operands of all forward
// and backward GEMMs rounded, attention/norms/CE in fp32) against the same fp32 reference:
// logits <= 5.2e-3, loss <= 2.9e-5, grads <= 1.8e-2 (a k_proj weight), AdamW step losses <= 2.9e-3
// (early steps, where Adam's update is nearly sign(g)). sft's bf16 mode measured the same (logits
// 5.2e-3, loss 2.9e-5, grads 1.7e-2, AdamW 2.7e-3). Logits, grads and AdamW get ~3-4x that; the
// loss (a mean whose per-token rounding errors partly cancel) gets 1e-3, 35x its measure, to stay
// robust across oneDNN bf16 code paths. A wrong op, or stale bf16 weight copies (losses that stop
// falling: errors of 0.1 and more by step 10), fails all of these by far.
constexpr Tolerances kBf16{2e-2, 1e-3, 5e-2, 2e-2};

// ---- fixtures ---------------------------------------------------------------------------------
// The case names of make_reference.py's CASES (listed here so each is its own ctest test).
const std::vector<std::string> kCases = {"mha_untied",     "gqa_tied",    "qwen2_bias_gqa",
                                         "rope_linear",    "rope_llama3", "attention_bias",
                                         "head_dim_32",    "long_seq_tiles"};

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Fixtures {
  std::string dir;          // one sub-directory per case
  std::string skip_reason;  // set when the Python reference environment is missing
  std::string error;        // set when generation failed
};

// Runs tools/make_reference.py once per build (re-run when the script changes) into the build
// tree. Several test processes may race (ctest -j): each generates into its own temporary
// directory and renames it into place; a loser discards its copy.
const Fixtures& fixtures() {
  static Fixtures fx;
  static std::once_flag once;
  std::call_once(once, [] {
    const fs::path src = SFT_SOURCE_DIR, python = src / ".venv/bin/python";
    const fs::path script = src / "tools/make_reference.py";
    const fs::path root = fs::path(SFT_BINARY).parent_path() / "tests/fixtures/generated";
    const fs::path out = root / "parity";
    fx.dir = out.string();
    if (!fs::exists(python)) {
      fx.skip_reason = fmt::format("{} not found: run scripts/setup_venv.sh to create the Python "
                                   "reference environment (torch + transformers)", python.string());
      return;
    }
    const std::string stamp = fmt::format("{:016x}", std::hash<std::string>{}(read_file(script)));
    if (fs::exists(out / "stamp") && read_file(out / "stamp") == stamp) return;
    fs::create_directories(root);
    const fs::path tmp = root / fmt::format("parity.tmp.{}", getpid());
    fs::remove_all(tmp);
    const std::string log = (root / fmt::format("parity.{}.log", getpid())).string();
    const std::string cmd = fmt::format("\"{}\" \"{}\" --out \"{}\" > \"{}\" 2>&1", python.string(),
                                        script.string(), tmp.string(), log);
    const int rc = std::system(cmd.c_str());
    const std::string log_text = read_file(log);
    std::printf("%s", log_text.c_str());  // includes the torch / transformers versions
    fs::remove(log);
    if (rc != 0) {
      fx.error = fmt::format("reference generator failed (exit {}): {}\n{}", rc, cmd, log_text);
      fs::remove_all(tmp);
      return;
    }
    std::ofstream(tmp / "stamp") << stamp;
    std::error_code ec;
    fs::rename(out, root / fmt::format("parity.old.{}", getpid()), ec);  // stale copy, if any
    fs::remove_all(root / fmt::format("parity.old.{}", getpid()), ec);
    fs::rename(tmp, out, ec);
    if (ec) fs::remove_all(tmp);  // another process put an identical copy in place first
  });
  return fx;
}

// ---- one case: model directory, batch, reference tensors -----------------------------------------

struct Case {
  std::string name, dir;
  Batch batch;
  std::vector<uint8_t> valid;  // (N) 1 where the token is real (logits compared), 0 on padding
  int64_t num_targets = 0;
  nlohmann::json adamw;        // lr, betas, eps, weight_decay, steps of the torch run
  SafetensorsFile ref;

  explicit Case(const std::string& case_name)
      : name(case_name), dir(fixtures().dir + "/" + case_name), ref(dir + "/reference.safetensors") {
    const nlohmann::json j = nlohmann::json::parse(read_file(dir + "/batch.json"));
    batch.B = j.at("B");
    batch.T = j.at("T");
    batch.tokens = j.at("tokens").get<std::vector<int32_t>>();
    batch.targets = j.at("targets").get<std::vector<int32_t>>();
    batch.positions = j.at("positions").get<std::vector<int32_t>>();
    batch.cu_seqlens = j.at("cu_seqlens").get<std::vector<int32_t>>();
    valid = j.at("valid_logit_mask").get<std::vector<uint8_t>>();
    num_targets = j.at("num_targets");
    adamw = j.at("adamw");
  }

  std::vector<float> tensor(const std::string& key) const {
    const SafetensorsTensorInfo& t = ref.at(key);
    EXPECT_EQ(t.dtype, "F32") << key;
    std::vector<float> v(size_t(t.numel()));
    std::memcpy(v.data(), t.data, v.size() * sizeof(float));  // the mapping may be unaligned
    return v;
  }

  std::unique_ptr<LlamaModel> load(Backend& be, ModelOptions opt = {}) const {
    return load_hf_model(dir + "/model", be, opt);
  }
};

// ---- comparison -------------------------------------------------------------------------------

struct Diff {
  double max_diff = 0, ref_max = 0;
  double rel() const { return max_diff / std::max(ref_max, 1e-30); }
};

// Over the n elements where mask (optional) is set; NaN in a counts as an infinite difference.
Diff compare(const float* a, const float* b, size_t n, const uint8_t* mask = nullptr, size_t row = 1) {
  Diff d;
  for (size_t i = 0; i < n; ++i) {
    if (mask && !mask[i / row]) continue;
    const double diff = std::fabs(double(a[i]) - double(b[i]));
    d.max_diff = std::max(d.max_diff, std::isnan(diff) ? INFINITY : diff);
    d.ref_max = std::max(d.ref_max, std::fabs(double(b[i])));
  }
  return d;
}

// Prints "OK/NOT OK name maxdiff rel" and returns whether rel <= tol.
bool report(const std::string& name, const Diff& d, double tol) {
  const bool ok = d.rel() <= tol;
  std::printf("%-7s %-52s maxdiff %.3e  rel %.3e (tol %.0e)\n", ok ? "OK" : "NOT OK", name.c_str(),
              d.max_diff, d.rel(), tol);
  return ok;
}

struct Result {
  int failures = 0;
  double logits = 0, loss = 0, grads = 0;  // worst relative errors
  std::string worst_grad;
};

// Forward (logits, loss) and forward_backward (every gradient) of model on c against the reference.
Result check_model(LlamaModel& model, const Case& c, const Tolerances& tol) {
  Result r;
  const int64_t N = c.batch.num_tokens(), V = model.config().vocab_size;
  std::vector<float> logits(size_t(N * V));
  const double loss_sum = model.forward(c.batch, logits.data());
  const std::vector<float> ref_logits = c.tensor("logits");
  EXPECT_EQ(ref_logits.size(), logits.size());
  const Diff dl = compare(logits.data(), ref_logits.data(), logits.size(), c.valid.data(), size_t(V));
  r.logits = dl.rel();
  r.failures += !report("logits", dl, tol.logits);

  EXPECT_EQ(c.batch.num_targets(), c.num_targets);
  const float loss = float(loss_sum / double(c.num_targets)), ref_loss = c.tensor("loss").at(0);
  const Diff dloss = compare(&loss, &ref_loss, 1);
  r.loss = dloss.rel();
  r.failures += !report("loss", dloss, tol.loss);

  model.zero_grad();
  const double train_sum = model.forward_backward(c.batch, float(1.0 / double(c.num_targets)));
  const float train_loss = float(train_sum / double(c.num_targets));
  r.failures += !report("loss (forward_backward)", compare(&train_loss, &ref_loss, 1), tol.loss);
  size_t matched = 0;
  for (const ParamRef& g : model.grad_table()) {
    const std::string key = "grad." + g.hf_name;
    if (!c.ref.find(key)) {
      ADD_FAILURE() << "sft has gradient " << g.hf_name << " that HF does not";
      ++r.failures;
      continue;
    }
    ++matched;
    const std::vector<float> ref = c.tensor(key);
    EXPECT_EQ(size_t(g.view.numel()), ref.size()) << g.hf_name << " " << g.view.shape_str();
    if (size_t(g.view.numel()) != ref.size()) { ++r.failures; continue; }
    const Diff d = compare(g.view.f32(), ref.data(), ref.size());
    if (d.rel() > r.grads) r.grads = d.rel(), r.worst_grad = g.hf_name;
    r.failures += !report(g.hf_name, d, tol.grads);
  }
  size_t ref_grads = 0;
  for (const auto& t : c.ref.tensors()) ref_grads += t.name.rfind("grad.", 0) == 0;
  EXPECT_EQ(matched, ref_grads) << "HF has gradients that sft's grad_table() lacks";
  r.failures += int(ref_grads - matched);
  return r;
}

// Row r of a batch as a batch of its own (B = 1), for micro-batch accumulation.
Batch row_batch(const Batch& b, int64_t r) {
  Batch o;
  o.B = 1;
  o.T = b.T;
  const auto lo = size_t(r * b.T), hi = size_t((r + 1) * b.T);
  o.tokens.assign(b.tokens.begin() + lo, b.tokens.begin() + hi);
  o.targets.assign(b.targets.begin() + lo, b.targets.begin() + hi);
  o.positions.assign(b.positions.begin() + lo, b.positions.begin() + hi);
  for (int32_t cu : b.cu_seqlens)
    if (size_t(cu) >= lo && size_t(cu) <= hi) o.cu_seqlens.push_back(int32_t(size_t(cu) - lo));
  return o;
}

// Compares model's current gradients with the reference; returns the number of NOT OK tensors.
int compare_grads(LlamaModel& model, const Case& c, double tol) {
  int failures = 0;
  for (const ParamRef& g : model.grad_table()) {
    const std::vector<float> ref = c.tensor("grad." + g.hf_name);
    failures += !report(g.hf_name, compare(g.view.f32(), ref.data(), ref.size()), tol);
  }
  return failures;
}

// Losses of steps AdamW steps on the case batch, recorded before each step (as the generator).
std::vector<float> adamw_losses(LlamaModel& model, const Case& c) {
  const auto betas = c.adamw.at("betas").get<std::vector<float>>();
  AdamW opt(model, {betas.at(0), betas.at(1), c.adamw.at("eps").get<float>(),
                    c.adamw.at("weight_decay").get<float>()});
  std::vector<float> losses;
  for (int s = 0; s < c.adamw.at("steps").get<int>(); ++s) {
    model.zero_grad();
    const double sum = model.forward_backward(c.batch, float(1.0 / double(c.num_targets)));
    losses.push_back(float(sum / double(c.num_targets)));
    opt.step(c.adamw.at("lr").get<float>());
  }
  return losses;
}

int report_adamw(const std::vector<float>& got, const std::vector<float>& want, double tol, double* worst) {
  int failures = 0;
  EXPECT_EQ(got.size(), want.size());
  for (size_t s = 0; s < std::min(got.size(), want.size()); ++s) {
    const Diff d = compare(&got[s], &want[s], 1);
    *worst = std::max(*worst, d.rel());
    failures += !report(fmt::format("adamw step {} loss {:.6f} (torch {:.6f})", s, got[s], want[s]), d, tol);
  }
  return failures;
}

// ---- tests ------------------------------------------------------------------------------------

class Parity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const Fixtures& fx = fixtures();
    if (!fx.skip_reason.empty()) GTEST_SKIP() << fx.skip_reason;
    ASSERT_TRUE(fx.error.empty()) << fx.error;
    std::printf("---- case %s\n", GetParam().c_str());
    c_ = std::make_unique<Case>(GetParam());
  }
  std::unique_ptr<Case> c_;
};

TEST_P(Parity, Fp32LogitsLossGrads) {
  auto be = create_backend("cpu");
  auto model = c_->load(*be);
  const Result r = check_model(*model, *c_, kFp32);
  std::printf("fp32 %s: logits %.2e loss %.2e grads %.2e (%s)\n", c_->name.c_str(), r.logits, r.loss,
              r.grads, r.worst_grad.c_str());
  EXPECT_EQ(r.failures, 0) << "see the NOT OK lines above";
}

// The LM head + cross-entropy run in chunks of head_chunk rows; 13 divides nothing here.
TEST_P(Parity, Fp32SmallHeadChunk) {
  auto be = create_backend("cpu");
  auto model = c_->load(*be, ModelOptions{.head_chunk = 13});
  EXPECT_EQ(check_model(*model, *c_, kFp32).failures, 0) << "see the NOT OK lines above";
}

// Gradient accumulation across micro-batches (design §4: the global token mean over the step):
// each row as its own batch, forward_backward with 1 / (targets of both) and no zero_grad between,
// must give the reference gradients of the whole batch.
TEST_P(Parity, MicroBatchAccumulation) {
  auto be = create_backend("cpu");
  auto model = c_->load(*be);
  const float scale = float(1.0 / double(c_->num_targets));
  model->zero_grad();
  double loss_sum = 0;
  for (int64_t r = 0; r < c_->batch.B; ++r) loss_sum += model->forward_backward(row_batch(c_->batch, r), scale);
  const float loss = float(loss_sum / double(c_->num_targets)), ref_loss = c_->tensor("loss").at(0);
  int failures = !report("loss (micro-batches)", compare(&loss, &ref_loss, 1), kFp32.loss);
  failures += compare_grads(*model, *c_, kFp32.grads);
  EXPECT_EQ(failures, 0) << "see the NOT OK lines above";
}

TEST_P(Parity, RecomputeIsBitExact) {
  auto be = create_backend("cpu");
  auto model = c_->load(*be);
  const float scale = float(1.0 / double(c_->num_targets));
  model->zero_grad();
  const double loss_plain = model->forward_backward(c_->batch, scale);
  const Tensor g = model->grads_flat();
  std::vector<float> plain(g.f32(), g.f32() + g.numel());
  model->set_recompute(true);
  model->zero_grad();
  const double loss_recompute = model->forward_backward(c_->batch, scale);
  EXPECT_EQ(loss_plain, loss_recompute);
  size_t mismatches = 0;
  for (int64_t i = 0; i < g.numel(); ++i) mismatches += std::memcmp(&plain[size_t(i)], g.f32() + i, 4) != 0;
  EXPECT_EQ(mismatches, 0u) << "gradients with recompute differ from those without (bitwise)";
  // A model built with recompute from the start gives the same bits too.
  auto model2 = c_->load(*be, ModelOptions{.recompute = true});
  model2->zero_grad();
  model2->forward_backward(c_->batch, scale);
  EXPECT_EQ(std::memcmp(plain.data(), model2->grads_flat().f32(), plain.size() * 4), 0);
}

TEST_P(Parity, Bf16MatmulsWithinTolerance) {
  auto be = create_backend("cpu");
  be->set_matmul_dtype(DType::bf16);
  auto model = c_->load(*be);
  const Result r = check_model(*model, *c_, kBf16);
  std::printf("bf16 %s: logits %.2e loss %.2e grads %.2e (%s)\n", c_->name.c_str(), r.logits, r.loss,
              r.grads, r.worst_grad.c_str());
  EXPECT_EQ(r.failures, 0) << "see the NOT OK lines above";
  // bf16 mode must actually round: exact fp32 agreement would mean it is silently fp32.
  EXPECT_GT(r.logits, 1e-5) << "bf16 matmul mode gives fp32 results";
}

TEST_P(Parity, AdamW10StepsFp32) {
  auto be = create_backend("cpu");
  auto model = c_->load(*be);
  double worst = 0;
  const int failures =
      report_adamw(adamw_losses(*model, *c_), c_->tensor("adamw_losses"), kFp32.adamw_loss, &worst);
  std::printf("adamw fp32 %s: worst step loss rel err %.2e\n", c_->name.c_str(), worst);
  EXPECT_EQ(failures, 0);
}

// Weights change every step: a backend that kept stale bf16 weight copies would fail here.
TEST_P(Parity, AdamW10StepsBf16) {
  auto be = create_backend("cpu");
  be->set_matmul_dtype(DType::bf16);
  auto model = c_->load(*be);
  double worst = 0;
  const int failures =
      report_adamw(adamw_losses(*model, *c_), c_->tensor("adamw_losses"), kBf16.adamw_loss, &worst);
  std::printf("adamw bf16 %s: worst step loss rel err %.2e\n", c_->name.c_str(), worst);
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(HF, Parity, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

// The comparator is not vacuous: after loading, scale one RMSNorm weight by (1 + 1e-3) (a 0.1%
// error, far below what a wrong op produces) and the fp32 comparison must report mismatches, in
// the logits (measured 1.1e-3) and in gradients (all 22 fail); a single norm-weight element off by
// 1e-3 (logits 2.3e-4) and one perturbed matmul element must be caught as well.
TEST(ParityNegative, ComparatorIsNotVacuous) {
  const Fixtures& fx = fixtures();
  if (!fx.skip_reason.empty()) GTEST_SKIP() << fx.skip_reason;
  ASSERT_TRUE(fx.error.empty()) << fx.error;
  const Case c("mha_untied");
  auto be = create_backend("cpu");
  {
    auto model = c.load(*be);
    Tensor w = model->weights().layers[0].attn_norm;
    for (int64_t i = 0; i < w.numel(); ++i) w.f32()[i] *= 1.0f + 1e-3f;
    std::printf("---- expected NOT OK: layers.0.input_layernorm.weight scaled by 1.001\n");
    const Result r = check_model(*model, c, kFp32);
    EXPECT_GT(r.logits, kFp32.logits) << "a 0.1% norm-weight error went unnoticed in the logits";
    EXPECT_GT(r.grads, kFp32.grads) << "a 0.1% norm-weight error went unnoticed in the gradients";
    EXPECT_GT(r.failures, 2);
  }
  {
    auto model = c.load(*be);
    model->weights().final_norm.f32()[7] += 1e-3f;  // one element of a ~1.0 weight
    std::printf("---- expected NOT OK: one element of model.norm.weight += 1e-3\n");
    const Result r = check_model(*model, c, kFp32);
    EXPECT_GT(r.logits, kFp32.logits) << "a 1e-3 change of one norm weight element went unnoticed";
  }
  {
    auto model = c.load(*be);
    model->weights().layers[1].wdown.f32()[5] += 0.01f;  // weights are N(0, 0.02)
    std::printf("---- expected NOT OK: one element of layers.1.mlp.down_proj.weight += 0.01\n");
    const Result r = check_model(*model, c, kFp32);
    EXPECT_GT(r.failures, 0) << "one perturbed weight element went unnoticed";
  }
  // And the metric itself: a 1e-3 relative error on one element of a large tensor is caught.
  std::vector<float> a(1000, 1.0f), b = a;
  a[999] = 1.001f;
  EXPECT_NEAR(compare(a.data(), b.data(), a.size()).rel(), 1e-3, 1e-6);
  EXPECT_FALSE(report("synthetic", compare(a.data(), b.data(), a.size()), 1e-4));
}

}  // namespace
}  // namespace sft
