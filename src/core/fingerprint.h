// What a run trains on, as named string values (the resolved options, the data file's size and
// XXH3-64 checksum, the chat template), compared with one vocabulary in both places that must
// agree: a resume against the copy saved in the checkpoint (data/loader.cpp) and the ranks of a
// job against rank 0 (dist/world.cpp). Also the streaming XXH3-64 that data files are hashed with
// while they are read (the value core/file_hash.h's digest_file gives for the same bytes).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace sft {

// XXH3-64 over bytes given in pieces: digest() equals xxh3_of() of the concatenation.
class Xxh3Stream {
 public:
  Xxh3Stream();
  ~Xxh3Stream();
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;
  void update(const void* data, size_t size);
  uint64_t digest() const;

 private:
  void* state_;  // XXH3_state_t
};

struct FingerprintItem {
  std::string name;   // "seed", "data file XXH3", "--learning_rate", ...
  std::string value;  // as it is printed in a message
};

class Fingerprint {
 public:
  // Appends an item, or replaces the value of the item of that name.
  void add(std::string name, std::string value);
  const std::vector<FingerprintItem>& items() const { return items_; }
  const std::string* find(std::string_view name) const;  // null when absent
  bool empty() const { return items_.empty(); }

  // {"name": "value", ...} in item order, and back: sft::Error "[where] ..." when `j` is not an
  // object whose values are strings.
  nlohmann::ordered_json to_json() const;
  static Fingerprint from_json(const nlohmann::json& j, std::string_view where);

  // XXH3-64 of "name=value" of item i: what the ranks exchange.
  uint64_t item_hash(size_t i) const;

 private:
  std::vector<FingerprintItem> items_;
};

// An item whose value differs between two fingerprints, or that one of them lacks.
struct FingerprintChange {
  std::string name;
  const std::string* before = nullptr;  // null: `before` has no such item (e.g. an older checkpoint)
  const std::string* now = nullptr;     // null: `now` has no such item
};

// The changes from `before` to `now`, in `now`'s item order, then the items only `before` has.
// The pointers point into the two fingerprints.
std::vector<FingerprintChange> compare_fingerprints(const Fingerprint& before, const Fingerprint& now);

// "name: <before> <before_label>, <now> <now_label>", e.g. "template: 'vicuna_v1.1' in the
// checkpoint, 'llama-2' now"; an absent side reads "none".
std::string describe_change(const FingerprintChange& c, std::string_view before_label, std::string_view now_label);

// "1,234,567 bytes".
std::string byte_count(uint64_t bytes);

}  // namespace sft
