// --fsdp words -> ShardMode (fsdp_mode.h).
#include "dist/fsdp_mode.h"

#include <sstream>

#include "core/check.h"

namespace sft {

std::optional<ShardMode> parse_fsdp_mode(const std::string& fsdp, int world) {
  if (world <= 1) return std::nullopt;
  std::optional<ShardMode> mode;
  std::istringstream words(fsdp);
  for (std::string w; words >> w;) {
    if (w == "full_shard") mode = ShardMode::full_shard;
    else if (w == "shard_grad_op") mode = ShardMode::shard_grad_op;
    else if (w == "no_shard" || w == "auto_wrap") continue;
    else if (w == "hybrid_shard" || w == "hybrid_shard_zero2" || w == "_hybrid_shard_zero2" || w == "offload")
      fail("train", "--fsdp '{}' across {} ranks: '{}' is not built yet; built: full_shard (ZeRO-3), shard_grad_op "
                    "(ZeRO-2) and no_shard (DDP, the whole model on every rank)",
           fsdp, world, w);
    else
      fail("train", "--fsdp '{}': unknown word '{}', expected full_shard, shard_grad_op, no_shard, hybrid_shard, "
                    "offload or auto_wrap (HF's words)",
           fsdp, w);
  }
  return mode;
}

}  // namespace sft
