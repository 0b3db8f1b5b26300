// --fsdp words -> ShardMode, the shard group's size and the mode's start-up line (fsdp_mode.h).
#include "dist/fsdp_mode.h"

#include <cstdio>
#include <sstream>

#include "core/check.h"

namespace sft {

std::optional<ShardMode> parse_fsdp_mode(const std::string& fsdp, int world, const std::string& device) {
  std::optional<ShardMode> mode;
  bool offload = false;
  std::istringstream words(fsdp);
  for (std::string w; words >> w;) {
    if (w == "full_shard") mode = ShardMode::full_shard;
    else if (w == "shard_grad_op") mode = ShardMode::shard_grad_op;
    else if (w == "hybrid_shard") mode = ShardMode::hybrid_shard;
    else if (w == "hybrid_shard_zero2" || w == "_hybrid_shard_zero2") mode = ShardMode::hybrid_shard_zero2;
    else if (w == "offload") offload = true;
    else if (w == "no_shard" || w == "auto_wrap") continue;
    else
      fail("train", "--fsdp '{}': unknown word '{}', expected full_shard, shard_grad_op, no_shard, hybrid_shard, "
                    "hybrid_shard_zero2, offload or auto_wrap (HF's words)",
           fsdp, w);
  }
  if (offload && device != "cpu") {
    SFT_CHECK(mode == ShardMode::full_shard, "train",
              "--fsdp '{}' on --device {}: 'offload' works with full_shard (--fsdp \"full_shard offload\"), not {}",
              fsdp, device, mode ? shard_mode_name(*mode) : "no_shard");
    if (detect_launch().rank == 0)
      std::printf("note: --fsdp offload: fp32 weights, gradients and AdamW moments of each rank's shard in pinned "
                  "host memory, the AdamW update on the host CPU; each layer's weights copied to the %s around its "
                  "use, its gradients back after its reduce-scatter\n", device.c_str());
    return mode;
  }
  if (offload) {
    const char* as = world <= 1 ? "one process" : mode ? shard_mode_name(*mode) : "no_shard";
    if (detect_launch().rank == 0)
      std::printf("note: --fsdp offload on CPU ranks: the model state is in host memory already, nothing to move; "
                  "training as %s\n", as);
  }
  if (world <= 1) return std::nullopt;
  if (mode && is_hybrid(*mode) && device != "cpu" && detect_launch().rank == 0)
    std::printf("note: --fsdp %s on --device %s: NCCL's node split (ncclCommSplit) is built but has not run on "
                "GPUs yet (docs/distributed.md)\n", shard_mode_name(*mode), device.c_str());
  return mode;
}

bool fsdp_offload(const std::string& fsdp, const std::string& device) {
  if (device == "cpu") return false;
  std::istringstream words(fsdp);
  for (std::string w; words >> w;)
    if (w == "offload") return true;
  return false;
}

int shard_group_size(ShardMode mode, const LaunchInfo& launch) {
  return is_hybrid(mode) ? std::max(1, launch.local_size) : launch.size;
}

std::string describe_shard_mode(ShardMode mode, bool bf16) {
  const std::string gathered = bf16 ? "all-gathered around its use (matrices in bf16, norms and biases fp32)"
                                    : "all-gathered (fp32) around its use";
  switch (mode) {
    case ShardMode::full_shard:
      return "full_shard: weights, gradients and AdamW moments sharded 1/N, each layer " + gathered +
             ", gradients reduce-scattered";
    case ShardMode::shard_grad_op:
      return "shard_grad_op: weights whole on every rank, gradients reduce-scattered, AdamW moments sharded 1/N, "
             "updated shards all-gathered after each step";
    case ShardMode::hybrid_shard:
      return "hybrid_shard: full_shard among the L ranks of each node (weights, gradients and AdamW moments sharded "
             "1/L, each layer " + gathered + ", gradients reduce-scattered), every node a replica (gradient shards "
             "all-reduced across nodes)";
    case ShardMode::hybrid_shard_zero2:
      return "hybrid_shard_zero2: shard_grad_op among the L ranks of each node (gradients reduce-scattered, AdamW "
             "moments sharded 1/L, updated shards all-gathered within the node), every node a replica (gradient "
             "shards all-reduced across nodes)";
  }
  return shard_mode_name(mode);
}

}  // namespace sft
