// --fsdp_config (dist/fsdp_config.h): what each HF / accelerate FSDP key means for sft, whose unit
// of sharding is always one decoder layer (plus the embedding, and the final norm with the LM
// head), which gathers the next unit before the current one computes, in both passes, and keeps
// at most two gathered units (docs/distributed.md "How full_shard works").
#include "dist/fsdp_config.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/file_util.h"

namespace sft {

namespace {

using nlohmann::json;

std::string shown(const json& v) {
  std::string s = v.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

}  // namespace

FsdpConfig read_fsdp_config(const std::string& path, const std::string& device) {
  const std::string text = read_text_file(path, "fsdp_config");
  SFT_CHECK(text.size() <= (size_t(1) << 20), "fsdp_config", "{}: {} bytes, more than the 1 MiB an FSDP config may have",
            path, text.size());
  SFT_CHECK(json_nesting_depth(text, 16) <= 16, "fsdp_config", "{}: [ ] and {{ }} nested more than 16 levels deep",
            path);
  std::string error;
  const std::optional<json> parsed = parse_json_strict(text, &error);
  SFT_CHECK(parsed.has_value(), "fsdp_config", "{}: not valid JSON: {}", path, error);
  SFT_CHECK(parsed->is_object(), "fsdp_config", "{}: expected a JSON object of FSDP settings, got {}", path,
            parsed->type_name());
  FsdpConfig out;
  auto note = [&](const std::string& key, const json& v, const std::string& what) {
    out.notes.push_back(fmt::format("--fsdp_config {}: {}", key + " = " + shown(v), what));
  };
  auto boolean = [&](const std::string& key, const json& v) {
    // HF reads these from JSON as booleans; accelerate's YAML-to-JSON copies write "true"/"false"
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_string() && (v == "true" || v == "True" || v == "false" || v == "False")) return v == "true" || v == "True";
    fail("fsdp_config", "{}: '{}' must be true or false, got {}", path, key, shown(v));
  };
  for (const auto& [raw, v] : parsed->items()) {
    const std::string key = raw.rfind("fsdp_", 0) == 0 ? raw.substr(5) : raw;  // as HF strips it
    if (key == "min_num_params") {
      note(key, v, "not used: sft's unit is always one decoder layer (plus the embedding, and the final norm with "
                   "the LM head), whatever the parameter count");
    } else if (key == "transformer_layer_cls_to_wrap" || key == "auto_wrap_policy") {
      note(key, v, "accepted: sft wraps (shards) one decoder layer per unit, as TRANSFORMER_BASED_WRAP on "
                   "LlamaDecoderLayer / MistralDecoderLayer / Qwen2DecoderLayer does");
    } else if (key == "backward_prefetch" || key == "backward_prefetch_policy") {
      const bool pre = v.is_string() && (v == "backward_pre" || v == "BACKWARD_PRE");
      note(key, v, pre ? "honoured: the next unit's all-gather is issued before the current unit's backward"
                       : "sft always prefetches as backward_pre: the next unit's all-gather is issued before the "
                         "current unit's backward");
    } else if (key == "forward_prefetch") {
      note(key, v, boolean(key, v) ? "honoured: the next unit's all-gather is issued before the current unit's forward"
                                   : "sft always prefetches the next unit in the forward too (as true)");
    } else if (key == "limit_all_gathers") {
      note(key, v, boolean(key, v) ? "honoured: at most two gathered units are resident"
                                   : "sft always limits: at most two gathered units are resident");
    } else if (key == "activation_checkpointing") {
      out.activation_checkpointing = boolean(key, v);
      note(key, v, out.activation_checkpointing ? "honoured: gradient checkpointing on (each decoder layer is "
                                                  "recomputed before its backward, as --gradient_checkpointing True)"
                                                : "off: as --gradient_checkpointing says");
    } else if (key == "offload_params" || key == "cpu_offload") {
      const bool offload = boolean(key, v);
      SFT_CHECK(!offload || device == "cpu", "fsdp_config",
                "{}: '{}' true on --device {} asks for parameter offload to host memory: sft takes it from --fsdp's "
                "words, --fsdp \"full_shard offload\"; leave '{}' out of the file", path, raw, device, raw);
      note(key, v, offload ? "CPU ranks: the model state is in host memory already, nothing to move (as --fsdp offload)"
                           : "honoured: no offload");
    } else if (key == "sync_module_states") {
      note(key, v, "every rank starts from the same weights (each reads them from the same files, and the "
                   "configuration check at start compares the ranks' options and data)");
    } else if (key == "cpu_ram_efficient_loading") {
      note(key, v, "not used: every rank maps the model's safetensors files and keeps only its own shard");
    } else if (key == "use_orig_params") {
      note(key, v, "not used: sft's optimizer works on the flat shards directly");
    } else if (key == "state_dict_type") {
      note(key, v, "sft saves the full HF model (FULL_STATE_DICT, written by rank 0 unit by unit) and each "
                   "checkpoint's optimizer state in a layout that does not depend on the rank count");
    } else if (key == "sharding_strategy" || key == "reshard_after_forward") {
      note(key, v, "not used here: the sharding mode comes from --fsdp (full_shard, shard_grad_op, hybrid_shard, no_shard)");
    } else if (key.rfind("xla", 0) == 0) {
      note(key, v, "not used: XLA (TPU) settings");
    } else {
      note(raw, v, "ignored: not an FSDP setting sft knows");
    }
  }
  return out;
}

}  // namespace sft
