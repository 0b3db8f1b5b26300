// config.json <-> LlamaConfig for LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM, and
// the RoPE inverse frequencies. References: transformers configuration_{llama,mistral,qwen2}.py
// (defaults), modeling_rope_utils.py (rope types, both the v5 rope_parameters and the legacy
// rope_theta/rope_scaling spellings), ecosystem.md §1.4. mlp_bias and rope types other than
// default/linear/dynamic/llama3 are rejected, not approximated; a sliding window is kept as a limit
// on sequence length (see sliding_window in llama_config.h).
#include "model/llama_config.h"

#include <cmath>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/check.h"
#include "core/file_util.h"

namespace sft {

namespace {

using json = nlohmann::json;

// Per-architecture defaults where the HF config classes differ (vocab/sizes have no safe default
// and are required). bos/eos -1: Qwen2Config leaves them None.
struct ArchRow {
  const char* architecture;
  const char* model_type;
  int64_t max_position_embeddings;
  int64_t bos, eos;
};
//                           architecture           model_type max_pos    bos  eos
constexpr ArchRow kArchs[] = {{"LlamaForCausalLM",   "llama",   2048,      1,   2},
                              {"MistralForCausalLM", "mistral", 4096 * 32, 1,   2},
                              {"Qwen2ForCausalLM",   "qwen2",   32768,     -1,  -1}};

std::string supported_architectures() {
  std::vector<std::string> names;
  for (const ArchRow& r : kArchs) names.push_back(r.architecture);
  return fmt::format("{}", fmt::join(names, ", "));
}

const ArchRow* find_arch(std::string_view architecture) {
  for (const ArchRow& r : kArchs)
    if (architecture == r.architecture) return &r;
  return nullptr;
}

std::string describe(const json& v) {
  if (v.is_number_float()) return fmt::format("{} (a float)", v.dump());
  if (v.is_number_integer()) return fmt::format("{} (an integer)", v.dump());
  if (v.is_string()) return fmt::format("{} (a string)", v.dump());
  if (v.is_boolean()) return fmt::format("{} (a boolean)", v.dump());
  return std::string(v.type_name());
}

// Typed access to one JSON object; errors name the file and the dotted field path.
struct Fields {
  const json& obj;
  const std::string& where;
  std::string prefix;  // "" or "rope_scaling."

  // nullptr when the key is absent or null (HF treats null as "use the default").
  const json* get(const char* key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  const json& need(const char* key) const {
    const json* v = get(key);
    if (!v) fail("config", "{}: missing required field '{}{}'", where, prefix, key);
    return *v;
  }
  [[noreturn]] void wrong(const char* key, const json& v, const char* expected) const {
    fail("config", "{}: '{}{}' is {}, expected {}", where, prefix, key, describe(v), expected);
  }
  int64_t integer(const json& v, const char* key) const {
    if (!v.is_number_integer()) wrong(key, v, "an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) wrong(key, v, "a 64-bit integer");
    return v.get<int64_t>();
  }
  int64_t integer(const char* key) const { return integer(need(key), key); }
  int64_t integer(const char* key, int64_t def) const { return get(key) ? integer(*get(key), key) : def; }
  double number(const char* key) const {
    const json& v = need(key);
    if (!v.is_number()) wrong(key, v, "a number");
    return v.get<double>();
  }
  double number(const char* key, double def) const { return get(key) ? number(key) : def; }
  bool boolean(const char* key, bool def) const {
    const json* v = get(key);
    if (v && !v->is_boolean()) wrong(key, *v, "true or false");
    return v ? v->get<bool>() : def;
  }
  std::string string(const char* key) const {
    const json& v = need(key);
    if (!v.is_string()) wrong(key, v, "a string");
    return v.get<std::string>();
  }
  int64_t nullable_int(const char* key, int64_t def) const {  // absent -> def, null -> -1
    auto it = obj.find(key);
    if (it == obj.end()) return def;
    return it->is_null() ? -1 : integer(*it, key);
  }
};

// rope_scaling (legacy) or rope_parameters (v5) -> cfg.rope_*; rope_theta is read by the caller.
void parse_rope(const Fields& r, bool is_parameters, LlamaConfig& cfg) {
  std::string type = "default";
  const char* type_key = r.get("rope_type") ? "rope_type" : "type";
  if (r.get(type_key)) {
    type = r.string(type_key);
  } else if (!is_parameters) {
    fail("config", "{}: rope_scaling has no 'rope_type' (or 'type'), expected one of default, linear, dynamic, "
         "llama3", r.where);
  }
  if (type == "default") {
    cfg.rope_scaling = RopeScaling::none;
  } else if (type == "linear") {
    cfg.rope_scaling = RopeScaling::linear;
    cfg.rope_factor = r.number("factor");
  } else if (type == "dynamic") {
    cfg.rope_scaling = RopeScaling::dynamic;
    cfg.rope_factor = r.number("factor");
    cfg.rope_original_max_position_embeddings = r.integer("original_max_position_embeddings", 0);
  } else if (type == "llama3") {
    cfg.rope_scaling = RopeScaling::llama3;
    cfg.rope_factor = r.number("factor");
    cfg.rope_low_freq_factor = r.number("low_freq_factor");
    cfg.rope_high_freq_factor = r.number("high_freq_factor");
    cfg.rope_original_max_position_embeddings = r.integer("original_max_position_embeddings");
  } else {
    fail("config", "{}: unknown rope type '{}' in '{}{}', supported: default, linear, dynamic, llama3", r.where, type,
         r.prefix, type_key);
  }
}

const char* rope_type_name(RopeScaling s) {
  switch (s) {
    case RopeScaling::none: return "default";
    case RopeScaling::linear: return "linear";
    case RopeScaling::dynamic: return "dynamic";
    case RopeScaling::llama3: return "llama3";
  }
  return "default";
}

}  // namespace

LlamaConfig load_llama_config(const std::string& config_json_path) {
  const std::string text = read_text_file(config_json_path, "config");
  std::string err;
  std::optional<json> j = parse_json_strict(text, &err);
  if (!j) fail("config", "{}: not valid JSON: {}", config_json_path, err);
  return parse_llama_config(*j, config_json_path);
}

LlamaConfig parse_llama_config(const json& j, const std::string& where) {
  if (!j.is_object()) fail("config", "{}: top level is {}, expected a JSON object", where, describe(j));
  const Fields f{j, where, ""};
  LlamaConfig cfg;

  // Architecture: architectures[0], else model_type.
  const ArchRow* arch = nullptr;
  if (const json* a = f.get("architectures")) {
    if (!a->is_array() || a->empty() || !(*a)[0].is_string())
      f.wrong("architectures", *a, "a list of architecture names");
    const std::string name = (*a)[0].get<std::string>();
    arch = find_arch(name);
    if (!arch) fail("config", "{}: unknown architecture '{}', supported: {}", where, name, supported_architectures());
  }
  if (f.get("model_type")) {
    const std::string mt = f.string("model_type");
    if (!arch) {
      for (const ArchRow& r : kArchs)
        if (mt == r.model_type) arch = &r;
      if (!arch) fail("config", "{}: unknown model_type '{}' and no 'architectures', supported: {}", where, mt,
                      supported_architectures());
    }
    if (mt != arch->model_type)
      fail("config", "{}: model_type '{}' does not match architecture {}, expected '{}'", where, mt,
           arch->architecture, arch->model_type);
  }
  if (!arch) fail("config", "{}: missing required field 'architectures' (or 'model_type')", where);
  cfg.architecture = arch->architecture;
  cfg.model_type = arch->model_type;
  const bool is_qwen2 = cfg.model_type == "qwen2", is_mistral = cfg.model_type == "mistral";

  // Sizes.
  cfg.vocab_size = f.integer("vocab_size");
  cfg.hidden_size = f.integer("hidden_size");
  cfg.intermediate_size = f.integer("intermediate_size");
  cfg.num_hidden_layers = f.integer("num_hidden_layers");
  cfg.num_attention_heads = f.integer("num_attention_heads");
  cfg.num_key_value_heads = f.integer("num_key_value_heads", cfg.num_attention_heads);
  cfg.max_position_embeddings = f.integer("max_position_embeddings", arch->max_position_embeddings);
  if (cfg.hidden_size <= 0) fail("config", "{}: hidden_size is {}, expected > 0", where, cfg.hidden_size);
  if (cfg.num_attention_heads <= 0)
    fail("config", "{}: num_attention_heads is {}, expected > 0", where, cfg.num_attention_heads);
  if (f.get("head_dim")) {
    cfg.head_dim = f.integer("head_dim");
  } else {
    if (cfg.hidden_size % cfg.num_attention_heads != 0)
      fail("config", "{}: hidden_size {} is not divisible by num_attention_heads {} (and head_dim is not set)", where,
           cfg.hidden_size, cfg.num_attention_heads);
    cfg.head_dim = cfg.hidden_size / cfg.num_attention_heads;
  }

  // Numerics and options.
  cfg.rms_norm_eps = f.number("rms_norm_eps", 1e-6);
  cfg.initializer_range = f.number("initializer_range", 0.02);
  cfg.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  if (f.get("hidden_act") && f.string("hidden_act") != "silu")
    fail("config", "{}: hidden_act '{}' is not supported, expected 'silu'", where, f.string("hidden_act"));
  if (f.boolean("mlp_bias", false)) fail("config", "{}: mlp_bias true is not supported, expected false", where);
  // Llama's attention_bias adds biases to q, k, v and o; Mistral has none; Qwen2 always has q/k/v.
  cfg.attention_bias = cfg.model_type == "llama" && f.boolean("attention_bias", false);
  cfg.qkv_bias = is_qwen2;
  // Sliding-window attention (Mistral; Qwen2 with use_sliding_window): a key further than W - 1
  // positions back is masked. sft has no such mask: it keeps W and runs only sequences of at most
  // W tokens (LlamaModel, sft train and sft generate check), where the window never masks a key.
  if (is_mistral || (is_qwen2 && f.boolean("use_sliding_window", false))) {
    // MistralConfig's and Qwen2Config's default is 4096; null = none.
    const int64_t window = f.nullable_int("sliding_window", 4096);
    if (window == 0 || window < -1) fail("config", "{}: sliding_window is {}, expected > 0 or null", where, window);
    if (window > 0) cfg.sliding_window = window;  // even >= the context: RoPE scaling may train past it
  }

  // RoPE: v5 rope_parameters first, then the legacy rope_theta / rope_scaling.
  cfg.rope_theta = f.number("rope_theta", 10000.0);
  if (const json* rp = f.get("rope_parameters")) {
    if (!rp->is_object()) f.wrong("rope_parameters", *rp, "an object");
    const Fields r{*rp, where, "rope_parameters."};
    cfg.rope_theta = r.number("rope_theta", cfg.rope_theta);
    parse_rope(r, true, cfg);
  } else if (const json* rs = f.get("rope_scaling")) {
    if (!rs->is_object()) f.wrong("rope_scaling", *rs, "an object or null");
    parse_rope(Fields{*rs, where, "rope_scaling."}, false, cfg);
  }

  // Special tokens (null or absent = none; LLaMA-1 configs use pad -1).
  cfg.bos_token_id = f.nullable_int("bos_token_id", arch->bos);
  cfg.eos_token_ids.clear();
  auto eos = j.find("eos_token_id");
  if (eos == j.end()) {
    if (arch->eos >= 0) cfg.eos_token_ids = {arch->eos};
  } else if (eos->is_array()) {
    for (const json& e : *eos) cfg.eos_token_ids.push_back(f.integer(e, "eos_token_id"));
  } else if (!eos->is_null()) {
    cfg.eos_token_ids = {f.integer(*eos, "eos_token_id")};
  }
  cfg.pad_token_id = f.nullable_int("pad_token_id", -1);
  if (cfg.pad_token_id < 0) cfg.pad_token_id = -1;

  // Weight dtype: "dtype" (transformers >= 4.56), then "torch_dtype".
  if (f.get("dtype")) cfg.torch_dtype = f.string("dtype");
  else if (f.get("torch_dtype")) cfg.torch_dtype = f.string("torch_dtype");

  cfg.source = j;
  validate_llama_config(cfg, where);
  return cfg;
}

void validate_llama_config(const LlamaConfig& c, const std::string& where) {
  const ArchRow* arch = find_arch(c.architecture);
  if (!arch) fail("config", "{}: unknown architecture '{}', supported: {}", where, c.architecture,
                  supported_architectures());
  if (c.model_type != arch->model_type)
    fail("config", "{}: model_type '{}' does not match architecture {}, expected '{}'", where, c.model_type,
         c.architecture, arch->model_type);
  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position_embeddings}};
  for (auto [name, v] : sizes)
    if (v <= 0) fail("config", "{}: {} is {}, expected > 0", where, name, v);
  // Sizes no machine can allocate (a dimension typed with extra digits) are refused here, before
  // any size product could overflow int64 or reach the allocator: each dimension below 2^31 (token
  // ids are int32), and at most 2^42 (4.4 trillion) parameters, 70 TiB of fp32 training state.
  for (auto [name, v] : sizes)
    if (v >= (int64_t(1) << 31))
      fail("config", "{}: {} is {}, expected less than 2^31 ({}): a model of that size cannot be allocated", where,
           name, v, (int64_t(1) << 31));
  const double C = double(c.hidden_size), A = double(c.num_attention_heads * c.head_dim),
               KV = double(c.num_key_value_heads * c.head_dim);
  const double params = double(c.vocab_size) * C * (c.tie_word_embeddings ? 1 : 2) +
                        double(c.num_hidden_layers) * (2 * C * A + 2 * C * KV + 3 * C * double(c.intermediate_size));
  if (params > double(int64_t(1) << 42))
    fail("config", "{}: about {:.3g} parameters (vocab_size {}, hidden_size {}, intermediate_size {}, "
                   "num_hidden_layers {}): a model of that size cannot be allocated (the limit is 2^42, 4.4e12 "
                   "parameters; training takes 16 bytes per parameter)",
         where, params, c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("config", "{}: num_attention_heads {} is not divisible by num_key_value_heads {}", where,
         c.num_attention_heads, c.num_key_value_heads);
  if (c.head_dim % 2 != 0) fail("config", "{}: head_dim {} is odd, expected an even number (RoPE)", where, c.head_dim);
  if (!(c.rms_norm_eps > 0)) fail("config", "{}: rms_norm_eps is {}, expected > 0", where, c.rms_norm_eps);
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
    fail("config", "{}: rope_theta is {}, expected > 0", where, c.rope_theta);
  if (!(c.initializer_range >= 0))
    fail("config", "{}: initializer_range is {}, expected >= 0", where, c.initializer_range);
  if (c.rope_scaling != RopeScaling::none && !(c.rope_factor > 0 && std::isfinite(c.rope_factor)))
    fail("config", "{}: rope_scaling factor is {}, expected > 0", where, c.rope_factor);
  if (c.rope_scaling == RopeScaling::dynamic && c.rope_original_max_position_embeddings < 0)
    fail("config", "{}: rope_scaling original_max_position_embeddings is {}, expected > 0", where,
         c.rope_original_max_position_embeddings);
  if (c.rope_scaling == RopeScaling::llama3) {
    if (c.rope_original_max_position_embeddings <= 0)
      fail("config", "{}: rope_scaling original_max_position_embeddings is {}, expected > 0", where,
           c.rope_original_max_position_embeddings);
    if (!(c.rope_low_freq_factor > 0) || !(c.rope_high_freq_factor > c.rope_low_freq_factor))
      fail("config", "{}: rope_scaling low_freq_factor {} and high_freq_factor {}, expected 0 < low < high", where,
           c.rope_low_freq_factor, c.rope_high_freq_factor);
  }
  if (c.torch_dtype != "float32" && c.torch_dtype != "bfloat16" && c.torch_dtype != "float16")
    fail("config", "{}: torch_dtype '{}' is not supported, expected float32, bfloat16 or float16", where,
         c.torch_dtype);
  if (c.model_type == "qwen2" && (!c.qkv_bias || c.attention_bias))
    fail("config", "{}: Qwen2ForCausalLM has q/k/v biases and no o_proj bias (qkv_bias true, attention_bias false)",
         where);
  if (c.model_type != "qwen2" && c.qkv_bias)
    fail("config", "{}: qkv_bias is only for Qwen2ForCausalLM, not {}", where, c.architecture);
  for (int64_t id : c.eos_token_ids)
    if (id < 0) fail("config", "{}: eos_token_id {} is negative", where, id);
  if (c.bos_token_id < -1) fail("config", "{}: bos_token_id {} is negative", where, c.bos_token_id);
}

json llama_config_to_json(const LlamaConfig& c) {
  json j = c.source.is_object() ? c.source : json::object();
  j["architectures"] = json::array({c.architecture});
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["initializer_range"] = c.initializer_range;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.model_type == "llama") {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = false;
  }
  // Legacy RoPE keys, which every transformers version reads (v5 converts them to
  // rope_parameters); a rope_parameters key from the source is dropped so the two never disagree.
  j.erase("rope_parameters");
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling == RopeScaling::none) {
    j["rope_scaling"] = nullptr;
  } else {
    json rs = {{"rope_type", rope_type_name(c.rope_scaling)}, {"type", rope_type_name(c.rope_scaling)},
               {"factor", c.rope_factor}};
    if (c.rope_scaling == RopeScaling::llama3) {
      rs["low_freq_factor"] = c.rope_low_freq_factor;
      rs["high_freq_factor"] = c.rope_high_freq_factor;
    }
    if (c.rope_original_max_position_embeddings > 0 &&
        (c.rope_scaling == RopeScaling::llama3 || c.rope_scaling == RopeScaling::dynamic))
      rs["original_max_position_embeddings"] = c.rope_original_max_position_embeddings;
    j["rope_scaling"] = rs;
  }
  j["bos_token_id"] = c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr);
  if (c.eos_token_ids.empty()) j["eos_token_id"] = nullptr;
  else if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else j["eos_token_id"] = c.eos_token_ids;
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
  else if (j.contains("pad_token_id")) j["pad_token_id"] = nullptr;
  j["torch_dtype"] = c.torch_dtype;
  if (j.contains("dtype")) j["dtype"] = c.torch_dtype;
  j["use_cache"] = true;
  return j;
}

// Float arithmetic in the order torch evaluates HF's expressions on fp32 tensors: Python scalars
// are rounded to float, `s / t` is t.reciprocal() * s (torch's __rtruediv__), tensor ** tensor is
// fp32 pow, and tensor ** python_float is std::pow(float, double) rounded to float.
std::vector<float> rope_inv_freq(const LlamaConfig& c, int64_t seq_len) {
  const int64_t HS = c.head_dim;
  auto default_inv_freq = [&](float base) {
    std::vector<float> inv(size_t(HS / 2));
    for (int64_t i = 0; i < HS / 2; ++i) {
      const float e = float(2 * i) / float(HS);  // arange(0, dim, 2).float() / dim
      inv[size_t(i)] = 1.0f / std::pow(base, e);  // 1.0 / (base ** e)
    }
    return inv;
  };
  std::vector<float> inv;
  switch (c.rope_scaling) {
    case RopeScaling::none:
      inv = default_inv_freq(float(c.rope_theta));
      break;
    case RopeScaling::linear:
      inv = default_inv_freq(float(c.rope_theta));
      for (float& x : inv) x /= float(c.rope_factor);  // inv_freq /= factor
      break;
    case RopeScaling::dynamic: {
      // base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2)), seq_len a tensor.
      const int64_t max_pos = c.rope_original_max_position_embeddings > 0 ? c.rope_original_max_position_embeddings
                                                                          : c.max_position_embeddings;
      float base = float(c.rope_theta);
      if (seq_len > max_pos) {
        float t = float(c.rope_factor) * float(seq_len);
        t = t / float(max_pos);
        t = t - float(c.rope_factor - 1.0);
        t = float(std::pow(double(t), double(HS) / double(HS - 2)));  // torch: std::pow(float, double)
        base = float(c.rope_theta) * t;
      }
      inv = default_inv_freq(base);
      break;
    }
    case RopeScaling::llama3: {  // modeling_rope_utils._compute_llama3_parameters
      inv = default_inv_freq(float(c.rope_theta));
      const double old_ctx = double(c.rope_original_max_position_embeddings);
      const float factor = float(c.rope_factor), low = float(c.rope_low_freq_factor);
      const float low_wavelen = float(old_ctx / c.rope_low_freq_factor);
      const float high_wavelen = float(old_ctx / c.rope_high_freq_factor);
      const float high_minus_low = float(c.rope_high_freq_factor - c.rope_low_freq_factor);
      for (float& x : inv) {
        const float wavelen = (1.0f / x) * float(2.0 * M_PI);  // 2 * math.pi / inv_freq
        const float scaled = wavelen > low_wavelen ? x / factor : x;
        const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        if (medium) {
          const float smooth = ((1.0f / wavelen) * float(old_ctx) - low) / high_minus_low;
          x = (1.0f - smooth) * scaled / factor + smooth * scaled;
        } else {
          x = scaled;
        }
      }
      break;
    }
  }
  return inv;
}

}  // namespace sft
