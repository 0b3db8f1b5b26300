// The whole-model parity fixture shared by tests/model (CPU backend) and tests/cuda (GPU backend):
// tools/make_reference.py's tiny random Llama/Qwen2/Mistral cases (model directory, packed + padded batch,
// HF's logits, loss, every gradient and 10 torch.optim.AdamW step losses), generated once per build
// into the build tree (or taken from SFT_PARITY_FIXTURES), the tolerance table and the comparison
// helpers. Header-only; each test binary that includes it gets its own copy.
#pragma once
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
#include "backend/host_access.h"
#include "io/hf_model.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "train/optimizer.h"

namespace sft::parity {

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
inline const std::vector<std::string> kCases = {"mha_untied",     "gqa_tied",    "qwen2_bias_gqa",
                                         "rope_linear",    "rope_llama3", "attention_bias",
                                         "head_dim_32",    "long_seq_tiles", "mistral_window"};

inline std::string read_file(const fs::path& p) {
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
inline const Fixtures& fixtures() {
  static Fixtures fx;
  static std::once_flag once;
  std::call_once(once, [] {
    const fs::path src = SFT_SOURCE_DIR, python = src / ".venv/bin/python";
    const fs::path script = src / "tools/make_reference.py";
    const fs::path root = fs::path(SFT_BINARY).parent_path() / "tests/fixtures/generated";
    const fs::path out = root / "parity";
    fx.dir = out.string();
    if (const char* dir = std::getenv("SFT_PARITY_FIXTURES")) {  // generated elsewhere (a GPU machine)
      fx.dir = dir;
      if (!fs::exists(fs::path(dir) / "stamp")) fx.error = fmt::format("SFT_PARITY_FIXTURES={} has no stamp file", dir);
      return;
    }
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
inline Diff compare(const float* a, const float* b, size_t n, const uint8_t* mask = nullptr, size_t row = 1) {
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
inline bool report(const std::string& name, const Diff& d, double tol) {
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
inline Result check_model(LlamaModel& model, const Case& c, const Tolerances& tol) {
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
    const HostTensor grad(model.backend(), g.view, true);
    const Diff d = compare(grad.f32(), ref.data(), ref.size());
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
inline Batch row_batch(const Batch& b, int64_t r) {
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
inline int compare_grads(LlamaModel& model, const Case& c, double tol) {
  int failures = 0;
  for (const ParamRef& g : model.grad_table()) {
    const std::vector<float> ref = c.tensor("grad." + g.hf_name);
    const HostTensor grad(model.backend(), g.view, true);
    failures += !report(g.hf_name, compare(grad.f32(), ref.data(), ref.size()), tol);
  }
  return failures;
}

// Losses of steps AdamW steps on the case batch, recorded before each step (as the generator).
inline std::vector<float> adamw_losses(LlamaModel& model, const Case& c) {
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

inline int report_adamw(const std::vector<float>& got, const std::vector<float>& want, double tol, double* worst) {
  int failures = 0;
  EXPECT_EQ(got.size(), want.size());
  for (size_t s = 0; s < std::min(got.size(), want.size()); ++s) {
    const Diff d = compare(&got[s], &want[s], 1);
    *worst = std::max(*worst, d.rel());
    failures += !report(fmt::format("adamw step {} loss {:.6f} (torch {:.6f})", s, got[s], want[s]), d, tol);
  }
  return failures;
}

}  // namespace sft::parity
