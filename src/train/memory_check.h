// The memory check before training: what a run will hold (fp32 weights, gradients, AdamW moments,
// the backend's bf16 weight copies, activations for the largest micro-batch, the tokenized data)
// against what the machine (or its cgroup) has free, so that a batch that cannot fit fails in
// seconds with what to reduce instead of being OOM-killed mid-run. Sizes come from LlamaModel's
// own allocation plan; the model's part is checked before the data is read, the data's part
// while it is read (data/dataset.h DataMemoryEstimate), and the whole before the model is built.
#pragma once
#include <cstdint>
#include <string>

#include "model/llama.h"

namespace sft {

struct MemoryPlan {
  int64_t params = 0;            // parameter count
  int64_t weights = 0;           // bytes: fp32 master weights
  int64_t grads = 0;             //        fp32 gradients
  int64_t optimizer = 0;         //        AdamW m and v (fp32)
  int64_t weight_copies = 0;     //        bf16 copies of the weights, where the backend keeps them
  int64_t activations = 0;       //        activation buffers for max_tokens (LlamaModel::activation_bytes)
  int64_t data = 0;              //        the tokenized training and evaluation data (host memory)
  int64_t max_tokens = 0;        // N = B*T of the largest micro-batch
  int64_t total() const { return weights + grads + optimizer + weight_copies + activations + data; }
};

// weight_copy_bytes: per parameter, what the backend keeps for bf16 GEMMs in bf16 training
// (Backend::bf16_weight_copy_bytes), 0 in fp32. Activations that would not fit in 62 bits (an
// absurd vocabulary times the tokens) are capped there, so the check refuses them.
MemoryPlan plan_training_memory(const LlamaConfig& cfg, const ModelOptions& opt, int64_t max_tokens,
                                int weight_copy_bytes);

// Bytes this process can still take: MemAvailable from /proc/meminfo, capped by the cgroup v2
// (memory.max - memory.current) or v1 limit when one is set; -1 when unknown.
int64_t available_memory_bytes();

// One line per part, e.g. "weights 64.0 MiB, gradients 64.0 MiB, ... = 1.2 GiB" (the data and the
// bf16 copies only when the plan has them).
std::string describe(const MemoryPlan& plan);

// An sft::Error when plan.total() exceeds `available` (skipped when available < 0), naming the
// parts and what to reduce (batch size, model_max_length, gradient checkpointing; the data when
// the rest would fit without it; the model when its weights and optimizer state alone do not).
void check_memory_fits(const MemoryPlan& plan, int64_t available, int64_t batch_size, int64_t seq_len,
                       bool recompute);

// The memory of a model that is built but not trained (`sft init`, `sft generate`): its fp32
// weights and the gradient buffer every LlamaModel allocates, and, for decode_len > 0, one decode
// state of decode_len tokens (LlamaModel::make_decode_state: every layer's KV cache, one layer's
// activations, RoPE tables) and the logits the sampler copies, as `activations`. Sizes past 2^62
// bytes are capped there.
MemoryPlan plan_model_memory(const LlamaConfig& cfg, int64_t decode_len);

// One line, e.g. "weights 64.0 MiB, gradient buffer 64.0 MiB, KV cache and decode buffers for 512
// tokens 2.0 MiB = 130.0 MiB".
std::string describe_model_memory(const MemoryPlan& plan);

// "21.3 GiB available", or "free memory unknown" for available < 0.
std::string describe_available(int64_t available);

// An sft::Error from `where` when plan.total() exceeds `available` (skipped when available < 0):
// "[init] not enough memory: <what> (205.06 billion parameters) needs weights 763.9 GiB, gradient
// buffer 763.9 GiB = 1.5 TiB, but only 21.3 GiB is available: ...".
void check_model_memory_fits(const std::string& where, const std::string& what, const MemoryPlan& plan,
                             int64_t available);

}  // namespace sft
