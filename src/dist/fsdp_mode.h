// --fsdp's words as HF Trainer takes them ("full_shard auto_wrap", "shard_grad_op", "no_shard",
// "hybrid_shard", "offload", ...) turned into the sharding mode of a world of N ranks, the ranks one
// shard spans (the memory plan's 1/N or 1/L) and the start-up line naming the mode; shared by
// `sft train` and `sft bench`.
#pragma once
#include <optional>
#include <string>

#include "dist/sharded_store.h"
#include "dist/world.h"

namespace sft {

// Across ranks: no_shard (DDP, also for no words: nullopt), full_shard (ZeRO-3), shard_grad_op
// (ZeRO-2), hybrid_shard (full_shard within a node, replicated across nodes) and
// hybrid_shard_zero2 (also "_hybrid_shard_zero2": shard_grad_op within a node). `offload` on CPU
// ranks (device "cpu") has nothing to move: launch rank 0 says so once and the mode goes on
// without it; on a GPU device it needs full_shard (fsdp_offload then holds, ShardOptions::offload)
// and is full_shard even in a world of one (one GPU training a model larger than its memory). The
// hybrid modes on GPU ranks are noted as not yet run on GPUs. Otherwise a world of one holds
// everything whatever the words (nothing to shard: nullopt); the words are checked all the same.
std::optional<ShardMode> parse_fsdp_mode(const std::string& fsdp, int world, const std::string& device = "cpu");
// Whether the words ask for offload on a device that has something to move (not "cpu").
bool fsdp_offload(const std::string& fsdp, const std::string& device);

// The ranks one shard spans: the world, or under a hybrid mode the ranks on this node (the
// launcher's local size; the store checks at start that every node holds as many).
int shard_group_size(ShardMode mode, const LaunchInfo& launch);

// What the mode keeps on each rank and what moves, for the start-up line (sft train).
std::string describe_shard_mode(ShardMode mode, bool bf16);

}  // namespace sft
