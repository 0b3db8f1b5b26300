// Memory plan of a training run and the check against free memory (see memory_check.h).
#include "train/memory_check.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace sft {

MemoryPlan plan_training_memory(const LlamaConfig& cfg, const ModelOptions& opt, int64_t max_tokens,
                                int weight_copy_bytes) {
  MemoryPlan p;
  p.params = LlamaModel::count_params(cfg);
  p.weights = p.grads = 4 * p.params;
  p.optimizer = 8 * p.params;
  p.weight_copies = int64_t(weight_copy_bytes) * p.params;  // upper bound: the embedding is not a matmul weight unless tied
  p.max_tokens = max_tokens;
  // The largest activation terms are (N, vocab) logits and (N, intermediate) per layer: past 2^62
  // bytes the exact count would overflow, and no machine has that much anyway.
  const double widest = double(std::max({cfg.vocab_size, cfg.intermediate_size, cfg.hidden_size}));
  const double rough = double(max_tokens) * widest * 16.0 * double(cfg.num_hidden_layers + 2);
  constexpr int64_t kCap = int64_t(1) << 62;
  p.activations = max_tokens <= 0 ? 0 : rough >= double(kCap) ? kCap : LlamaModel::activation_bytes(cfg, opt, max_tokens);
  return p;
}

namespace {

int64_t read_int_file(const std::string& path) {  // -1 when absent or "max"
  std::ifstream f(path);
  std::string s;
  if (!(f >> s) || s == "max") return -1;
  try {
    return std::stoll(s);
  } catch (...) {  // not a number: treat as no limit
    return -1;
  }
}

std::string human(int64_t bytes) {
  const double b = double(bytes);
  if (b >= 1024.0 * 1024 * 1024 * 1024) return fmt::format("{:.1f} TiB", b / (1024.0 * 1024 * 1024 * 1024));
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.1f} GiB", b / (1024.0 * 1024 * 1024));
  return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
}

}  // namespace

int64_t available_memory_bytes() {
  int64_t avail = -1;
  std::ifstream mi("/proc/meminfo");
  for (std::string line; std::getline(mi, line);) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream ss(line.substr(13));
      int64_t kb = 0;
      if (ss >> kb) avail = kb * 1024;
    }
  }
  // cgroup v2, then v1: a container's limit is often far below the host's free memory.
  int64_t limit = read_int_file("/sys/fs/cgroup/memory.max"), used = read_int_file("/sys/fs/cgroup/memory.current");
  if (limit < 0) {
    limit = read_int_file("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = read_int_file("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    if (limit >= (int64_t(1) << 60)) limit = -1;  // v1 reports "no limit" as a huge number
  }
  if (limit > 0 && used >= 0) {
    const int64_t room = std::max<int64_t>(0, limit - used);
    avail = avail < 0 ? room : std::min(avail, room);
  }
  return avail;
}

std::string describe(const MemoryPlan& p) {
  std::string s = fmt::format("weights {}, gradients {}, AdamW moments {}", human(p.weights), human(p.grads),
                              human(p.optimizer));
  if (p.weight_copies) s += fmt::format(", bf16 weight copies {}", human(p.weight_copies));
  s += fmt::format(", activations {} for {} tokens per micro-batch", human(p.activations), p.max_tokens);
  if (p.data) s += fmt::format(", tokenized data {}", human(p.data));
  s += fmt::format(" = {}", human(p.total()));
  return s;
}

void check_memory_fits(const MemoryPlan& p, int64_t available, int64_t batch_size, int64_t seq_len, bool recompute) {
  if (available < 0 || p.total() <= available) return;
  std::string fix = fmt::format("lower --per_device_train_batch_size (now {}) or --model_max_length (now {})",
                                batch_size, seq_len);
  if (!recompute) fix += ", or turn on --gradient_checkpointing True";
  if (p.data > 0 && p.total() - p.data <= available)
    fix = fmt::format("the tokenized data ({}) is what does not fit: train on a part of it, or lower "
                      "--model_max_length (now {}) to keep fewer tokens of long samples", human(p.data), seq_len);
  if (p.weights + p.grads + p.optimizer > available)
    fix = "the model's weights, gradients and AdamW moments alone do not fit: use a smaller model or a machine "
          "with more memory";
  fail("train", "not enough memory: this run needs about {} ({}), but only {} is available. {}", human(p.total()),
       describe(p), human(available), fix);
}

MemoryPlan plan_model_memory(const LlamaConfig& cfg, int64_t decode_len) {
  MemoryPlan p;
  p.params = LlamaModel::count_params(cfg);
  p.weights = p.grads = 4 * p.params;  // LocalParamStore allocates both, trained or not
  p.max_tokens = decode_len;
  if (decode_len <= 0) return p;
  // make_decode_state's f32 buffers, counted in double: layers x max_len x qkv can pass 2^63.
  const double T = double(decode_len), C = double(cfg.hidden_size), FF = double(cfg.intermediate_size);
  const double AO = double(cfg.num_attention_heads) * double(cfg.head_dim), V = double(cfg.vocab_size);
  const double floats = double(cfg.num_hidden_layers) * T * double(cfg.qkv_dim())  // the KV cache (q|k|v rows)
                        + T * (5 * C + AO + 3 * FF + 2)                          // one layer's activations, x, proj
                        + T * double(cfg.head_dim)                               // RoPE cos and sin
                        + C + 1 + V;                                             // the last row's norm, logits
  const double bytes = 4 * floats + 20 * V;  // and the sampler's copy of the logits and its (p, id) pairs
  constexpr int64_t kCap = int64_t(1) << 62;
  p.activations = bytes >= double(kCap) ? kCap : int64_t(bytes);
  return p;
}

std::string describe_model_memory(const MemoryPlan& p) {
  std::string s = fmt::format("weights {}, gradient buffer {}", human(p.weights), human(p.grads));
  if (p.max_tokens > 0)
    s += fmt::format(", KV cache and decode buffers for {} tokens {}", p.max_tokens, human(p.activations));
  return s + fmt::format(" = {}", human(p.total()));
}

std::string describe_available(int64_t available) {
  return available < 0 ? "free memory unknown" : fmt::format("{:.1f} GiB available", double(available) / (1 << 30));
}

void check_model_memory_fits(const std::string& where, const std::string& what, const MemoryPlan& p,
                             int64_t available) {
  if (available < 0 || p.total() <= available) return;
  fail(where, "not enough memory: {} ({:.2f} billion parameters) needs {}, but only {} is available: use a "
       "smaller model or a machine with more memory",
       what, double(p.params) / 1e9, describe_model_memory(p), human(available));
}

}  // namespace sft
