// --fsdp's words as HF Trainer takes them ("full_shard auto_wrap", "shard_grad_op", "no_shard",
// "hybrid_shard", "offload", ...) turned into the sharding mode of a world of N ranks; shared by
// `sft train` and `sft bench`.
#pragma once
#include <optional>
#include <string>

#include "dist/sharded_store.h"

namespace sft {

// Across ranks: no_shard (DDP, also for no words: nullopt), full_shard (ZeRO-3) and shard_grad_op
// (ZeRO-2); the modes not built yet are refused, not ignored. A world of one holds everything
// whatever the words (nothing to shard: nullopt).
std::optional<ShardMode> parse_fsdp_mode(const std::string& fsdp, int world);

}  // namespace sft
