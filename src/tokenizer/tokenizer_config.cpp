// Reads tokenizer_config.json, special_tokens_map.json and added_tokens.json the way
// transformers 4.40 from_pretrained combines them, and the leftmost-longest token matcher.
#include "tokenizer/tokenizer_config.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/file_util.h"

namespace sft {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A special token value: "text", {"content": "text", ...}, or null.
std::optional<std::string> token_content(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

AddedToken parse_added_token(const json& v, bool default_special) {
  AddedToken t;
  t.content = token_content(v).value_or("");
  t.special = default_special;
  t.normalized = !default_special;
  if (v.is_object()) {
    const auto flag = [&](const char* key, bool def) {
      return v.contains(key) && v[key].is_boolean() ? v[key].get<bool>() : def;
    };
    t.single_word = flag("single_word", false);
    t.lstrip = flag("lstrip", false);
    t.rstrip = flag("rstrip", false);
    t.special = flag("special", default_special);
    t.normalized = flag("normalized", !t.special);
  }
  return t;
}

std::optional<bool> opt_bool(const json& j, const char* key) {
  if (j.contains(key) && j[key].is_boolean()) return j[key].get<bool>();
  return std::nullopt;
}

void add_unique(std::vector<std::string>& v, const std::string& s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}

TokenizerConfig read_config_files(const std::string& dir);

}  // namespace

TokenizerConfig read_tokenizer_config(const std::string& dir) {
  try {
    return read_config_files(dir);
  } catch (const json::exception& e) {
    fail("tokenizer", "{}: unexpected tokenizer config structure: {}", dir, e.what());
  }
}

namespace {

TokenizerConfig read_config_files(const std::string& dir) {
  TokenizerConfig cfg;
  static const char* kSpecialKeys[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
  const auto set_special = [&](const std::string& key, const json& v) {
    std::optional<std::string> c = token_content(v);
    TokenizerConfig::Special* s = key == "bos_token"   ? &cfg.bos_token
                                  : key == "eos_token" ? &cfg.eos_token
                                  : key == "unk_token" ? &cfg.unk_token
                                                       : &cfg.pad_token;
    *s = {true, c};
    if (c && v.is_object()) {
      AddedToken t = parse_added_token(v, true);
      t.special = true;
      cfg.special_token_attrs.push_back(t);
    }
  };
  const auto add_additional = [&](const json& list) {
    if (!list.is_array()) return;
    for (const json& v : list)
      if (auto c = token_content(v)) add_unique(cfg.additional_special_tokens, *c);
  };

  const fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    json j = read_json_file_lenient(config_path.string(), "tokenizer");
    if (!j.is_object()) fail("tokenizer", "{}: expected a JSON object", config_path.string());
    if (j.contains("tokenizer_class") && j["tokenizer_class"].is_string()) cfg.tokenizer_class = j["tokenizer_class"];
    for (const char* key : kSpecialKeys)
      if (j.contains(key)) set_special(key, j[key]);
    if (j.contains("additional_special_tokens")) add_additional(j["additional_special_tokens"]);
    cfg.add_bos_token = opt_bool(j, "add_bos_token");
    cfg.add_eos_token = opt_bool(j, "add_eos_token");
    cfg.legacy = opt_bool(j, "legacy");
    cfg.add_prefix_space = opt_bool(j, "add_prefix_space");
    if (j.contains("added_tokens_decoder") && j["added_tokens_decoder"].is_object()) {
      for (const auto& [key, v] : j["added_tokens_decoder"].items()) {
        AddedToken t = parse_added_token(v, false);
        try {
          t.id = std::stoi(key);
        } catch (const std::exception&) {
          fail("tokenizer", "{}: added_tokens_decoder key '{}' is not an id", config_path.string(), key);
        }
        cfg.added_tokens.push_back(t);
      }
    }
  }

  // special_tokens_map.json overrides the config's special tokens and extends the additional ones.
  const fs::path map_path = fs::path(dir) / "special_tokens_map.json";
  if (fs::exists(map_path)) {
    json j = read_json_file_lenient(map_path.string(), "tokenizer");
    if (!j.is_object()) fail("tokenizer", "{}: expected a JSON object", map_path.string());
    for (const char* key : kSpecialKeys)
      if (j.contains(key) && !j[key].is_null()) set_special(key, j[key]);
    if (j.contains("additional_special_tokens")) add_additional(j["additional_special_tokens"]);
  }

  // added_tokens.json: {"content": id}; special when it names a special token, normalized otherwise.
  const fs::path added_path = fs::path(dir) / "added_tokens.json";
  if (fs::exists(added_path)) {
    json j = read_json_file_lenient(added_path.string(), "tokenizer");
    if (!j.is_object()) fail("tokenizer", "{}: expected a JSON object", added_path.string());
    std::vector<std::string> specials = cfg.additional_special_tokens;
    for (const auto* s : {&cfg.bos_token, &cfg.eos_token, &cfg.unk_token, &cfg.pad_token})
      if (s->content) specials.push_back(*s->content);
    for (const auto& [content, id] : j.items()) {
      if (!id.is_number_integer()) fail("tokenizer", "{}: id of '{}' is not an integer", added_path.string(), content);
      const int64_t id64 = id.get<int64_t>();
      if (id64 < 0 || id64 > INT32_MAX)
        fail("tokenizer", "{}: id of '{}' is {}, expected 0 ... {}", added_path.string(), content, id64, INT32_MAX);
      const int32_t tid = static_cast<int32_t>(id64);  // a copy: clang 14 cannot capture a structured binding
      bool known = std::any_of(cfg.added_tokens.begin(), cfg.added_tokens.end(),
                               [&](const AddedToken& t) { return t.id == tid; });
      if (known) continue;
      AddedToken t;
      t.content = content;
      t.id = tid;
      t.special = std::find(specials.begin(), specials.end(), content) != specials.end();
      t.normalized = !t.special;
      cfg.added_tokens.push_back(t);
    }
  }
  std::sort(cfg.added_tokens.begin(), cfg.added_tokens.end(),
            [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  return cfg;
}

}  // namespace

void TokenMatcher::add(std::string_view pattern, int32_t value) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (unsigned char c : pattern) {
    int32_t next = child(node, c);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      auto& edges = nodes_[node].next;
      edges.insert(std::lower_bound(edges.begin(), edges.end(), std::make_pair(c, int32_t{-1})), {c, next});
    }
    node = next;
  }
  nodes_[node].value = value;
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
}

int32_t TokenMatcher::child(int32_t node, unsigned char c) const {
  const auto& edges = nodes_[node].next;
  auto it = std::lower_bound(edges.begin(), edges.end(), std::make_pair(c, int32_t{-1}));
  return it != edges.end() && it->first == c ? it->second : -1;
}

TokenMatcher::Match TokenMatcher::find(std::string_view text, size_t from) const {
  for (size_t i = from; i < text.size(); ++i) {
    if (!first_byte_[static_cast<unsigned char>(text[i])]) continue;
    Match best;
    int32_t node = 0;
    for (size_t k = i; k < text.size(); ++k) {
      node = child(node, static_cast<unsigned char>(text[k]));
      if (node < 0) break;
      if (nodes_[node].value >= 0) best = {i, k + 1, nodes_[node].value};
    }
    if (best.value >= 0) return best;
  }
  return {text.size(), text.size(), -1};
}

}  // namespace sft
