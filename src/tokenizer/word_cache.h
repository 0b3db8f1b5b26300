// A bounded, thread-safe cache from a word (pre-token) to its ids, shared by the tokenizers. It is
// sharded so that threads encoding different texts rarely wait on each other, stops growing when
// full (as HF tokenizers' BPE cache), and ignores long words.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sft {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 256;

  WordCache() : shards_(new Shard[kShards]) {}

  // Appends the cached ids of `word` to `out`; false when not cached.
  bool lookup(std::string_view word, std::vector<int32_t>& out) const {
    if (word.size() >= kMaxWordBytes) return false;
    Shard& s = shard(word);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(word);
    if (it == s.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }

  void insert(std::string_view word, std::span<const int32_t> ids) const {
    if (word.size() >= kMaxWordBytes) return;
    Shard& s = shard(word);
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.map.size() < kShardCapacity) s.map.emplace(std::string(word), std::vector<int32_t>(ids.begin(), ids.end()));
  }

 private:
  static constexpr size_t kShards = 64, kShardCapacity = 4096;
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  Shard& shard(std::string_view word) const { return shards_[StringHash{}(word) % kShards]; }
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace sft
