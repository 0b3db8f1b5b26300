// Fingerprint items, their JSON form and comparison, and the streaming XXH3-64 (see fingerprint.h).
#include "core/fingerprint.h"

#include <xxhash.h>

#include <fmt/format.h>

#include "core/check.h"

namespace sft {

Xxh3Stream::Xxh3Stream() : state_(XXH3_createState()) {
  SFT_CHECK(state_ != nullptr && XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_)) == XXH_OK, "checksum",
            "cannot set up an XXH3 state");
}

Xxh3Stream::~Xxh3Stream() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Xxh3Stream::update(const void* data, size_t size) {
  if (size > 0) XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data, size);
}

uint64_t Xxh3Stream::digest() const { return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state_)); }

void Fingerprint::add(std::string name, std::string value) {
  for (FingerprintItem& it : items_)
    if (it.name == name) {
      it.value = std::move(value);
      return;
    }
  items_.push_back({std::move(name), std::move(value)});
}

const std::string* Fingerprint::find(std::string_view name) const {
  for (const FingerprintItem& it : items_)
    if (it.name == name) return &it.value;
  return nullptr;
}

nlohmann::ordered_json Fingerprint::to_json() const {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const FingerprintItem& it : items_) j[it.name] = it.value;
  return j;
}

Fingerprint Fingerprint::from_json(const nlohmann::json& j, std::string_view where) {
  SFT_CHECK(j.is_object(), where, "fingerprint: expected a JSON object of strings, found {}", j.type_name());
  Fingerprint f;
  for (const auto& [name, value] : j.items()) {
    SFT_CHECK(value.is_string(), where, "fingerprint: '{}' is {}, expected a string", name, value.type_name());
    f.add(name, value.get<std::string>());
  }
  return f;
}

uint64_t Fingerprint::item_hash(size_t i) const {
  const std::string s = items_.at(i).name + "=" + items_.at(i).value;
  return XXH3_64bits(s.data(), s.size());
}

std::vector<FingerprintChange> compare_fingerprints(const Fingerprint& before, const Fingerprint& now) {
  std::vector<FingerprintChange> out;
  for (const FingerprintItem& it : now.items()) {
    const std::string* b = before.find(it.name);
    if (!b || *b != it.value) out.push_back({it.name, b, &it.value});
  }
  for (const FingerprintItem& it : before.items())
    if (!now.find(it.name)) out.push_back({it.name, &it.value, nullptr});
  return out;
}

std::string describe_change(const FingerprintChange& c, std::string_view before_label, std::string_view now_label) {
  return fmt::format("{}: {} {}, {} {}", c.name, c.before ? *c.before : "none", before_label, c.now ? *c.now : "none",
                     now_label);
}

std::string byte_count(uint64_t bytes) {
  const std::string s = std::to_string(bytes);
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out + (bytes == 1 ? " byte" : " bytes");
}

}  // namespace sft
