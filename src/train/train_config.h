// TrainConfig: every setting of `sft train`, named as FastChat / HF TrainingArguments name them.
// Filled by the option table (cli/options.cpp) from flags and --config files; the trainer reads it.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "train/schedule.h"

namespace sft {

// The strategy options, as enums parsed once by the option table (cli/options.cpp).
enum class IntervalStrategy { no, steps, epoch };  // HF IntervalStrategy (save, evaluation)
enum class LossNormalization { global_token_mean, micro_batch_mean };
enum class ReportTo { tensorboard, none, wandb, all };

// Each enum's flag spellings, in the order --help lists them.
template <class E> struct EnumNames;
template <> struct EnumNames<IntervalStrategy> {
  static constexpr std::array<std::pair<IntervalStrategy, const char*>, 3> values{
      {{IntervalStrategy::no, "no"}, {IntervalStrategy::steps, "steps"}, {IntervalStrategy::epoch, "epoch"}}};
};
template <> struct EnumNames<LossNormalization> {
  static constexpr std::array<std::pair<LossNormalization, const char*>, 2> values{
      {{LossNormalization::global_token_mean, "global_token_mean"},
       {LossNormalization::micro_batch_mean, "micro_batch_mean"}}};
};
template <> struct EnumNames<ReportTo> {
  static constexpr std::array<std::pair<ReportTo, const char*>, 4> values{
      {{ReportTo::tensorboard, "tensorboard"}, {ReportTo::none, "none"}, {ReportTo::wandb, "wandb"}, {ReportTo::all, "all"}}};
};
template <> struct EnumNames<ScheduleKind> {
  static constexpr std::array<std::pair<ScheduleKind, const char*>, 4> values{
      {{ScheduleKind::linear, "linear"}, {ScheduleKind::cosine, "cosine"}, {ScheduleKind::constant, "constant"},
       {ScheduleKind::constant_with_warmup, "constant_with_warmup"}}};
};
template <class E> const char* enum_name(E e) {
  for (const auto& [v, name] : EnumNames<E>::values)
    if (v == e) return name;
  return "?";
}

struct TrainConfig {
  // model and data (FastChat ModelArguments / DataArguments)
  std::string model_name_or_path;
  std::string data_path;
  std::string eval_data_path;
  std::string conversation_template = "vicuna_v1.1";
  bool lazy_preprocess = false;
  int64_t model_max_length = 512;
  bool packing = true;
  std::string padding_side = "right";
  std::string tokenizer_kind = "auto";  // auto | sentencepiece | json
  bool strict_data = false;
  // output and checkpoints
  std::string output_dir;
  IntervalStrategy save_strategy = IntervalStrategy::steps;
  int64_t save_steps = 500;
  int64_t save_total_limit = 0;  // 0 = keep all
  std::string resume_from_checkpoint;
  bool ignore_data_skip = false;  // resume: the saved epoch from its first row; data changes logged, not refused
  bool save_on_interrupt = true;  // SIGINT/SIGTERM: save a checkpoint, then exit
  // schedule
  double num_train_epochs = 3.0;
  int64_t max_steps = -1;
  int64_t per_device_train_batch_size = 8;
  int64_t per_device_eval_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  double learning_rate = 5e-5;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;
  ScheduleKind lr_scheduler_type = ScheduleKind::linear;
  double warmup_ratio = 0.0;
  int64_t warmup_steps = 0;
  LossNormalization loss_normalization = LossNormalization::global_token_mean;
  int64_t max_bad_steps = 10;
  // evaluation and logging
  IntervalStrategy evaluation_strategy = IntervalStrategy::no;  // alias --eval_strategy
  int64_t eval_steps = 0;                   // 0 = logging_steps, as HF
  int64_t logging_steps = 500;
  ReportTo report_to = ReportTo::tensorboard;
  // precision and memory
  bool bf16 = false;
  bool fp16 = false;
  bool tf32 = false;
  bool gradient_checkpointing = false;
  std::string device = "cpu";
  int64_t threads = 0;  // 0 = all cores
  double ddp_timeout = 1800;  // seconds a collective may wait for the other ranks (HF); no effect in one process
  std::string fsdp_reduce_dtype = "fp32";  // gradients reduced over ranks in fp32 or bf16 (HF's bf16 reduce)
  std::string fsdp_config;  // HF's --fsdp_config JSON file (dist/fsdp_config.h), "" = none
  int64_t seed = 42;
  // accepted for compatibility (see cli/options.cpp for what each does)
  std::string fsdp;
  std::string fsdp_transformer_layer_cls_to_wrap;
  std::string optim = "adamw_torch";
  std::string cache_dir;
  bool trust_remote_code = false;
  int64_t local_rank = -1;
};

}  // namespace sft
