// The `sft train` option table (design.md §2) and its parser. Names follow FastChat's train.py
// and HF TrainingArguments so their launch scripts' flags parse unchanged (fastchat-sft.md §5.1).
#include "cli/options.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <optional>
#include <variant>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include "core/check.h"
#include "core/file_util.h"

namespace sft {

namespace {

using Member = std::variant<std::string TrainConfig::*, int64_t TrainConfig::*, double TrainConfig::*,
                            bool TrainConfig::*, IntervalStrategy TrainConfig::*, LossNormalization TrainConfig::*,
                            ReportTo TrainConfig::*, ScheduleKind TrainConfig::*>;

// The allowed values of a numeric option: lo..hi, each end closed or open (infinite: no bound).
struct Range {
  double lo = -HUGE_VAL, hi = HUGE_VAL;
  bool lo_open = false, hi_open = false;
  bool contains(double x) const { return (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi); }
  std::string describe() const {
    const bool has_lo = std::isfinite(lo), has_hi = std::isfinite(hi);
    if (has_lo && has_hi) return fmt::format("in {}{}, {}{}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]");
    if (has_lo) return fmt::format("{} {}", lo_open ? ">" : ">=", lo);
    if (has_hi) return fmt::format("{} {}", hi_open ? "<" : "<=", hi);
    return "any number";
  }
};
constexpr Range at_least(double lo) { return {lo, HUGE_VAL, false, false}; }
constexpr Range from_to(double lo, double hi, bool hi_open = false) { return {lo, hi, false, hi_open}; }
constexpr Range any_number() { return {}; }

struct Option {
  const char* name;
  Member member;
  const char* help;
  std::vector<const char*> choices = {};  // allowed values of a string option (empty: any; enums: their names)
  const char* compat = nullptr;           // set: accepted for compatibility; printed once when given
  std::optional<Range> range = {};        // every numeric option has one (checked when parsed, shown in --help)
};

using C = TrainConfig;
// clang-format off
const std::vector<Option> kOptions = {
  // model and data
  {"model_name_or_path",   &C::model_name_or_path,   "HF model directory to fine-tune (config.json, *.safetensors, tokenizer)"},
  {"data_path",            &C::data_path,            "training conversations: ShareGPT JSON/JSONL, OpenAI messages or Alpaca"},
  {"eval_data_path",       &C::eval_data_path,       "evaluation conversations (same formats)"},
  {"conversation_template",&C::conversation_template,"chat template: a built-in one, or auto (the model's own, from its tokenizer_config.json / chat_template.jinja)", {"vicuna_v1.1", "llama-2", "llama-3", "chatml", "mistral", "alpaca", "zephyr", "auto"}},
  {"model_max_length",     &C::model_max_length,     "tokens per sample (longer ones are truncated) and per packed row", {}, nullptr, at_least(2)},
  {"packing",              &C::packing,              "pack samples into rows of model_max_length tokens (False: pad each sample, as FastChat)"},
  {"lazy_preprocess",      &C::lazy_preprocess,      "accepted for FastChat compatibility; data is always tokenized once, in parallel, up front",
                            {}, "--lazy_preprocess: accepted for compatibility; sft tokenizes all samples up front on all cores"},
  {"padding_side",         &C::padding_side,         "padding side when --packing False", {"right"}},
  {"tokenizer_kind",       &C::tokenizer_kind,       "which tokenizer file to use when a model has both", {"auto", "sentencepiece", "json"}},
  {"strict_data",          &C::strict_data,          "stop at the first invalid sample instead of counting and skipping it"},
  // output and checkpoints
  {"output_dir",           &C::output_dir,           "where checkpoints, logs and the final model go"},
  {"save_strategy",        &C::save_strategy,        "when to write checkpoint-<step>/"},
  {"save_steps",           &C::save_steps,           "optimizer steps between checkpoints (save_strategy steps)", {}, nullptr, at_least(0)},
  {"save_total_limit",     &C::save_total_limit,     "keep at most this many checkpoints (0: all)", {}, nullptr, at_least(0)},
  {"resume_from_checkpoint",&C::resume_from_checkpoint,"checkpoint directory to resume from (default: the newest complete one in output_dir)"},
  {"ignore_data_skip",     &C::ignore_data_skip,     "on resume, start the checkpoint's epoch from its first row instead of skipping to the saved position; a changed data file, template or data option is then reported, not refused (HF)"},
  {"save_on_interrupt",    &C::save_on_interrupt,    "on SIGINT/SIGTERM save a checkpoint after the current step, then exit (128 + signal)"},
  // schedule and optimizer
  {"num_train_epochs",     &C::num_train_epochs,     "epochs over the training data", {}, nullptr, at_least(0)},
  {"max_steps",            &C::max_steps,            "optimizer steps to run; overrides num_train_epochs when > 0", {}, nullptr, at_least(-1)},
  {"per_device_train_batch_size", &C::per_device_train_batch_size, "rows per micro-batch", {}, nullptr, at_least(1)},
  {"per_device_eval_batch_size",  &C::per_device_eval_batch_size,  "rows per evaluation batch", {}, nullptr, at_least(1)},
  {"gradient_accumulation_steps", &C::gradient_accumulation_steps, "micro-batches per optimizer step", {}, nullptr, at_least(1)},
  {"learning_rate",        &C::learning_rate,        "peak learning rate (AdamW)", {}, nullptr, at_least(0)},
  {"weight_decay",         &C::weight_decay,         "AdamW decoupled weight decay (not on norm weights and biases)", {}, nullptr, at_least(0)},
  {"adam_beta1",           &C::adam_beta1,           "AdamW beta1", {}, nullptr, from_to(0, 1, true)},
  {"adam_beta2",           &C::adam_beta2,           "AdamW beta2", {}, nullptr, from_to(0, 1, true)},
  {"adam_epsilon",         &C::adam_epsilon,         "AdamW epsilon", {}, nullptr, at_least(0)},
  {"max_grad_norm",        &C::max_grad_norm,        "clip the global gradient norm to this (0: no clipping)", {}, nullptr, at_least(0)},
  {"lr_scheduler_type",    &C::lr_scheduler_type,    "learning-rate schedule"},
  {"warmup_ratio",         &C::warmup_ratio,         "warmup steps = ceil(ratio x total steps)", {}, nullptr, from_to(0, 1)},
  {"warmup_steps",         &C::warmup_steps,         "warmup steps (overrides warmup_ratio when > 0)", {}, nullptr, at_least(0)},
  {"loss_normalization",   &C::loss_normalization,   "global_token_mean: sum over the step's target tokens / their count (current HF); micro_batch_mean: mean of per-micro-batch token means (FastChat-era HF)"},
  {"max_bad_steps",        &C::max_bad_steps,        "stop after this many consecutive steps with a NaN/Inf loss or gradient", {}, nullptr, at_least(1)},
  // evaluation and logging
  {"evaluation_strategy",  &C::evaluation_strategy,  "when to evaluate on eval_data_path (alias --eval_strategy)"},
  {"eval_steps",           &C::eval_steps,           "optimizer steps between evaluations (0: logging_steps)", {}, nullptr, at_least(0)},
  {"logging_steps",        &C::logging_steps,        "optimizer steps between metric lines", {}, nullptr, at_least(1)},
  {"report_to",            &C::report_to,            "metric sinks besides metrics.jsonl"},
  // precision and hardware
  {"bf16",                 &C::bf16,                 "bf16 GEMMs with fp32 accumulation; fp32 master weights, gradients and optimizer state"},
  {"fp16",                 &C::fp16,                 "not supported: use --bf16 True"},
  {"tf32",                 &C::tf32,                 "TF32 tensor cores for fp32 matmuls (--device cuda); no effect on CPU"},
  {"gradient_checkpointing",&C::gradient_checkpointing,"recompute each decoder layer's activations in backward"},
  {"device",               &C::device,               "compute device", {"cpu", "cuda"}},
  {"threads",              &C::threads,              "CPU threads (0: all cores)", {}, nullptr, at_least(0)},
  {"ddp_timeout",          &C::ddp_timeout,          "seconds a rank waits in a collective for the others before it ends the job (HF; more than the slowest save or evaluation); no effect in one process", {}, nullptr, Range{0, HUGE_VAL, true, false}},
  {"seed",                 &C::seed,                 "seed for data order and anything random", {}, nullptr, any_number()},
  // accepted for compatibility
  {"fsdp",                 &C::fsdp,                 "FSDP sharding (FastChat scripts pass \"full_shard auto_wrap\")", {},
                            "--fsdp: one process has nothing to shard; under mpirun/srun no_shard (DDP), full_shard (ZeRO-3), shard_grad_op (ZeRO-2), hybrid_shard (full_shard within a node, replicated across nodes) and hybrid_shard_zero2 are built; offload on CPU ranks has nothing to move (noted); \"full_shard offload\" on --device cuda keeps the state in pinned host memory, one process included"},
  {"fsdp_transformer_layer_cls_to_wrap", &C::fsdp_transformer_layer_cls_to_wrap, "FSDP wrap unit (decoder layers)", {},
                            "--fsdp_transformer_layer_cls_to_wrap: accepted for compatibility; sft always shards per decoder layer"},
  {"fsdp_config",          &C::fsdp_config,          "HF's FSDP config JSON (min_num_params, transformer_layer_cls_to_wrap, backward_prefetch, forward_prefetch, limit_all_gathers, activation_checkpointing, ...): each key honoured or noted at start", {}},
  {"fsdp_reduce_dtype",    &C::fsdp_reduce_dtype,    "dtype gradients are reduced over ranks in: fp32 (the same math as one process) or bf16 (HF Trainer's reduce under --bf16: half the bytes, bf16 sums)", {"fp32", "bf16"}},
  {"optim",                &C::optim,                "optimizer", {"adamw_torch", "adamw_hf", "adamw_torch_fused"}},
  {"cache_dir",            &C::cache_dir,            "HF hub cache (unused: models are local directories)", {},
                            "--cache_dir: accepted for compatibility; sft loads local model directories only"},
  {"trust_remote_code",    &C::trust_remote_code,    "accepted for compatibility (no remote code is ever run)", {},
                            "--trust_remote_code: accepted for compatibility; sft runs no model code from the model directory"},
  {"local_rank",           &C::local_rank,           "set by launchers; accepted for compatibility", {},
                            "--local_rank: accepted for compatibility; sft takes ranks from its launcher", at_least(-1)},
};
// clang-format on

const std::vector<std::pair<const char*, const char*>> kAliases = {{"eval_strategy", "evaluation_strategy"}};

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t prev = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cur = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] != b[j - 1])});
      prev = cur;
    }
  }
  return row[b.size()];
}

const Option& find_option(const std::string& raw, const std::string& where) {
  std::string name = raw;
  for (auto [alias, target] : kAliases)
    if (name == alias) name = target;
  for (const Option& o : kOptions)
    if (name == o.name) return o;
  const Option* best = &kOptions.front();
  for (const Option& o : kOptions)
    if (edit_distance(name, o.name) < edit_distance(name, best->name)) best = &o;
  fail(where, "unknown option '{}'; did you mean '--{}'? (sft train --help lists all)", raw, best->name);
}

bool parse_bool(const std::string& v, const std::string& name) {
  if (v == "True" || v == "true" || v == "1" || v == "yes") return true;
  if (v == "False" || v == "false" || v == "0" || v == "no") return false;
  fail("options", "--{} expects True or False, got '{}'", name, v);
}

// The allowed values of an option: its own list, or an enum's spellings.
std::vector<const char*> choices_of(const Option& o) {
  return std::visit(
      [&](auto member) {
        using T = std::remove_cvref_t<decltype(std::declval<TrainConfig>().*member)>;
        std::vector<const char*> c = o.choices;
        if constexpr (std::is_enum_v<T>)
          for (const auto& [v, name] : EnumNames<T>::values) c.push_back(name);
        return c;
      },
      o.member);
}

bool is_numeric(const Option& o) {
  return std::holds_alternative<int64_t TrainConfig::*>(o.member) || std::holds_alternative<double TrainConfig::*>(o.member);
}

void check_range(const Option& o, double x, const std::string& value, const std::string& where) {
  SFT_ASSERT(o.range.has_value());  // the table gives every numeric option its range
  if (!o.range->contains(x)) fail(where, "--{} must be {}, got {}", o.name, o.range->describe(), value);
}

void assign(TrainConfig& cfg, const Option& o, const std::string& value, const std::string& where) {
  std::visit(
      [&](auto member) {
        using T = std::remove_reference_t<decltype(cfg.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!o.choices.empty() && std::find_if(o.choices.begin(), o.choices.end(),
                                                 [&](const char* c) { return value == c; }) == o.choices.end())
            fail(where, "--{} must be one of {}, got '{}'", o.name, fmt::join(o.choices, ", "), value);
          cfg.*member = value;
        } else if constexpr (std::is_enum_v<T>) {  // parsed once, here
          for (const auto& [v, name] : EnumNames<T>::values)
            if (value == name) {
              cfg.*member = v;
              return;
            }
          fail(where, "--{} must be one of {}, got '{}'", o.name, fmt::join(choices_of(o), ", "), value);
        } else if constexpr (std::is_same_v<T, bool>) {
          cfg.*member = parse_bool(value, o.name);
        } else if constexpr (std::is_same_v<T, int64_t>) {
          int64_t x = 0;
          auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), x);
          if (ec != std::errc() || p != value.data() + value.size())
            fail(where, "--{} expects an integer, got '{}'", o.name, value);
          check_range(o, double(x), value, where);
          cfg.*member = x;
        } else {
          char* end = nullptr;
          double x = std::strtod(value.c_str(), &end);
          if (value.empty() || *end != '\0' || !std::isfinite(x))
            fail(where, "--{} expects a number, got '{}'", o.name, value);
          check_range(o, x, value, where);
          cfg.*member = x;
        }
      },
      o.member);
}

bool is_bool(const Option& o) { return std::holds_alternative<bool TrainConfig::*>(o.member); }

std::string value_string(const TrainConfig& cfg, const Option& o) {
  return std::visit(
      [&](auto member) -> std::string {
        using T = std::remove_cvref_t<decltype(cfg.*member)>;
        if constexpr (std::is_same_v<T, bool>) return cfg.*member ? "True" : "False";
        else if constexpr (std::is_enum_v<T>) return enum_name(cfg.*member);
        else if constexpr (std::is_same_v<T, std::string>) return cfg.*member;
        else return fmt::format("{}", cfg.*member);
      },
      o.member);
}

// The file is a flat mapping of option names to values: sizes and nesting far beyond that are
// refused before yaml-cpp (a recursive parser) sees the text.
void check_config_bounds(const std::string& path, const std::string& text) {
  constexpr size_t kMaxBytes = size_t(1) << 20, kMaxNesting = 32, kMaxIndent = 256;
  SFT_CHECK(text.size() <= kMaxBytes, "config", "{}: {} bytes, more than the {} a config file may have", path,
            text.size(), kMaxBytes);
  SFT_CHECK(json_nesting_depth(text, kMaxNesting) <= kMaxNesting, "config",
            "{}: [ ] and {{ }} nested more than {} levels deep", path, kMaxNesting);
  size_t line = 1, lead = 0;
  bool leading = true;
  for (char c : text) {
    if (c == '\n') {
      ++line, lead = 0, leading = true;
    } else if (leading && (c == ' ' || c == '\t' || c == '-' || c == '?' || c == ':')) {
      SFT_CHECK(++lead <= kMaxIndent, "config", "{}: line {} is indented or nested more than {} columns deep", path,
                line, kMaxIndent);
    } else {
      leading = false;
    }
  }
}

void apply_config_file(const std::string& path, ParsedOptions& out, std::vector<const Option*>& given) {
  const std::string text = read_text_file(path, "config");
  check_config_bounds(path, text);
  YAML::Node root;
  try {
    root = YAML::Load(text);  // JSON is YAML, so one reader serves both
  } catch (const YAML::Exception& e) {
    fail("config", "{}: {}", path, e.what());
  }
  SFT_CHECK(root.IsMap(), "config", "{}: expected a mapping of option names to values", path);
  for (const auto& kv : root) {
    SFT_CHECK(kv.first.IsScalar(), "config", "{}: an option name must be a plain name, got a {}", path,
              kv.first.IsSequence() ? "list" : kv.first.IsMap() ? "mapping" : "null");
    const std::string key = kv.first.as<std::string>();
    const Option& o = find_option(key, "config " + path);
    SFT_CHECK(kv.second.IsScalar(), "config", "{}: '{}' must be a single value", path, key);
    std::string v = kv.second.as<std::string>();
    assign(out.config, o, v, "config " + path);
    given.push_back(&o);
  }
}

}  // namespace

ParsedOptions parse_train_options(int argc, char** argv) {
  ParsedOptions out;
  std::vector<std::pair<const Option*, std::string>> flags;
  std::vector<const Option*> given;
  std::string config_file;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      out.help = true;
      return out;
    }
    SFT_CHECK(arg.starts_with("--"), "options", "unexpected argument '{}' (options look like --name value)", arg);
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "config") {
      if (!has_value) {
        SFT_CHECK(i + 1 < argc, "options", "--config needs a file");
        value = argv[++i];
      }
      config_file = value;
      continue;
    }
    const Option& o = find_option(name, "options");
    if (!has_value) {
      // A boolean flag followed by another flag (or nothing) means True, as HF's parser.
      if (is_bool(o) && (i + 1 >= argc || std::string_view(argv[i + 1]).starts_with("--"))) {
        value = "True";
      } else {
        SFT_CHECK(i + 1 < argc, "options", "--{} needs a value", name);
        value = argv[++i];
      }
    }
    flags.emplace_back(&o, value);
  }
  if (!config_file.empty()) apply_config_file(config_file, out, given);
  for (auto& [o, v] : flags) {
    assign(out.config, *o, v, "options");
    given.push_back(o);
  }
  for (const Option& o : kOptions)
    if (o.compat && std::find(given.begin(), given.end(), &o) != given.end()) out.notices.push_back(o.compat);
  // HF: max_steps > 0 overrides the epochs; without it, 0 epochs would still run a step.
  SFT_CHECK(out.config.max_steps > 0 || out.config.num_train_epochs > 0, "options",
            "--num_train_epochs must be > 0 when --max_steps is not set (> 0), got {}", out.config.num_train_epochs);
  if (out.config.tf32 && out.config.device == "cpu")
    out.notices.push_back("--tf32: accepted for compatibility; it has no effect on the CPU backend");
  if (out.config.report_to == ReportTo::wandb || out.config.report_to == ReportTo::all)
    out.notices.push_back(std::string("--report_to ") + enum_name(out.config.report_to) +
                          ": Weights & Biases is not built in; metrics go to TensorBoard event files "
                          "(output_dir/runs, which `wandb sync` imports) and metrics.jsonl");
  return out;
}

std::string train_options_help() {
  std::string s = "usage: sft train --model_name_or_path DIR --data_path FILE --output_dir DIR [options]\n"
                  "       options also come from --config FILE (YAML or JSON with the same keys)\n\n";
  TrainConfig defaults;
  for (const Option& o : kOptions) {
    s += fmt::format("  --{:<36} {}", o.name, o.help);
    if (!choices_of(o).empty()) s += fmt::format(" [{}]", fmt::join(choices_of(o), "|"));
    if (is_numeric(o)) s += fmt::format(" [{}]", o.range ? o.range->describe() : "no range");
    std::string d = value_string(defaults, o);
    s += fmt::format(" (default: {})\n", d.empty() ? "none" : d);
  }
  s += "  --eval_strategy                        alias of --evaluation_strategy\n";
  return s;
}

std::vector<std::pair<std::string, std::string>> train_config_values(const TrainConfig& cfg) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Option& o : kOptions) out.emplace_back(o.name, value_string(cfg, o));
  return out;
}

std::string describe_train_config(const TrainConfig& cfg) {
  std::string s;
  for (const auto& [name, value] : train_config_values(cfg)) s += fmt::format("  {:<36} {}\n", name, value);
  return s;
}

std::vector<std::string> train_option_names() {
  std::vector<std::string> names;
  for (const Option& o : kOptions) names.push_back(o.name);
  return names;
}

}  // namespace sft
